// Streaming text holds back the last (longest stop string - 1) bytes so a stop string split
// across tokens is never partly sent; the remainder is flushed when the request finishes.
#include "runtime/request_state.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/tokenizer.h"

namespace loraserve {

void RequestState::Init(GenerationRequest req, RequestCallbacks cb, Clock::time_point now) {
  request = std::move(req);
  callbacks = std::move(cb);
  tokens = request.prompt_ids;
  submitted = now;
  sampler = std::make_unique<Sampler>(request.sampling);
  for (size_t i = 0; i < adapters.size(); ++i) {
    absl::StrAppend(&set_key, pool_keys[i], "@", adapters[i].second, ";");
  }
  for (const std::string& stop : request.stop_strings) {
    if (!stop.empty()) stop_holdback_ = std::max(stop_holdback_, stop.size() - 1);
  }
}

void RequestState::Stream(int32_t token, size_t upto) {
  if (!callbacks.on_token) return;
  TokenEvent event;
  event.token = token;
  if (upto > streamed_) {
    event.text = text_.substr(streamed_, upto - streamed_);
    streamed_ = upto;
  }
  callbacks.on_token(event);
}

std::optional<FinishReason> RequestState::Append(int32_t token, bool is_eos,
                                                 const Tokenizer* tokenizer,
                                                 Clock::time_point now) {
  if (!first_token) first_token = now;
  if (is_eos && !request.ignore_eos) return FinishReason::kStop;
  tokens.push_back(token);
  generated.push_back(token);
  if (tokenizer != nullptr) {
    if (!detokenizer_) detokenizer_.emplace(*tokenizer, /*skip_special_tokens=*/true);
    text_ += detokenizer_->Push(token);
    // The earliest occurrence of any stop string ends the text, whatever the list order.
    size_t first = std::string::npos;
    for (const std::string& stop : request.stop_strings) {
      if (stop.empty()) continue;
      const size_t from = streamed_ > stop.size() ? streamed_ - stop.size() : 0;
      first = std::min(first, text_.find(stop, from));
    }
    if (first != std::string::npos) {
      text_.resize(first);
      Stream(token, text_.size());
      return FinishReason::kStop;
    }
  }
  size_t safe = text_.size() > stop_holdback_ ? text_.size() - stop_holdback_ : 0;
  // Never cut inside a UTF-8 sequence: back up to the start of the character.
  while (safe > streamed_ && safe < text_.size() &&
         (static_cast<unsigned char>(text_[safe]) & 0xC0) == 0x80) {
    --safe;
  }
  Stream(token, std::max(safe, streamed_));
  if (static_cast<int>(generated.size()) >= request.max_tokens) return FinishReason::kLength;
  return std::nullopt;
}

RequestResult RequestState::MakeResult(FinishReason reason, absl::Status status,
                                       Clock::time_point now) {
  if (streamed_ < text_.size()) Stream(-1, text_.size());  // flush held-back text
  RequestResult result;
  result.tokens = generated;
  result.text = text_;
  result.finish_reason = reason;
  result.status = std::move(status);
  result.prompt_tokens = static_cast<int>(request.prompt_ids.size());
  auto seconds = [&](std::optional<Clock::time_point> t) {
    return t ? std::chrono::duration<double>(*t - submitted).count() : 0.0;
  };
  result.queued_seconds = seconds(first_scheduled);
  result.first_token_seconds = seconds(first_token);
  result.total_seconds = std::chrono::duration<double>(now - submitted).count();
  return result;
}

}  // namespace loraserve
