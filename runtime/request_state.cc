// Streaming text holds back the last (longest stop string - 1) bytes so a stop string split
// across tokens is never partly sent; the remainder is flushed when the request finishes.
// min_tokens holds EOS off by masking its logits and stop strings off by not looking for them.
#include "runtime/request_state.h"

#include <algorithm>
#include <limits>

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

SampledToken RequestState::SampleNext(std::span<float> logits, std::span<const int32_t> eos_ids) {
  const bool mask_eos =
      !request.ignore_eos && static_cast<int>(generated.size()) < request.min_tokens;
  std::vector<std::pair<int32_t, float>> masked;  // allocates only while masking
  if (mask_eos) {
    for (int32_t id : eos_ids) {
      if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
      masked.emplace_back(id, logits[id]);
      logits[id] = -std::numeric_limits<float>::infinity();
    }
  }
  SampledToken out;
  out.token = sampler->Sample(logits);
  // Restored in reverse, so an id listed twice gets its original value back.
  for (auto it = masked.rbegin(); it != masked.rend(); ++it) logits[it->first] = it->second;
  // Logprobs describe the model's distribution, not the mask: a token sampled under the mask
  // reports the probability the model gave it, and EOS may rank among the alternatives. So do
  // vLLM's default raw logprobs, computed before its logits processors (min_tokens among them).
  if (request.logprobs >= 0) {
    out.logprobs = ComputeTokenLogprobs(logits, out.token, request.logprobs);
  }
  return out;
}

void RequestState::Stream(int32_t token, size_t upto, const TokenLogprobs* token_logprobs) {
  if (!callbacks.on_token) return;
  TokenEvent event;
  event.token = token;
  if (token_logprobs != nullptr) event.logprobs = *token_logprobs;
  if (upto > streamed_) {
    event.text = text_.substr(streamed_, upto - streamed_);
    streamed_ = upto;
  }
  callbacks.on_token(event);
}

bool RequestState::AppendText(const std::string& delta) {
  const size_t old_size = text_.size();
  text_ += delta;
  if (static_cast<int>(generated.size()) < request.min_tokens) return false;
  // Only a stop string that ends inside the new text counts. Without min_tokens no earlier one
  // exists; with it, one completed while stop strings were held off stays part of the text.
  // The earliest such occurrence ends the text, whatever the list order.
  size_t first = std::string::npos;
  for (const std::string& stop : request.stop_strings) {
    if (stop.empty()) continue;
    const size_t from = old_size + 1 > stop.size() ? old_size + 1 - stop.size() : 0;
    first = std::min(first, text_.find(stop, from));
  }
  if (first == std::string::npos) return false;
  text_.resize(first);
  stopped_by_string_ = true;
  return true;
}

std::optional<FinishReason> RequestState::Append(int32_t token, bool is_eos,
                                                 const Tokenizer* tokenizer, Clock::time_point now,
                                                 std::optional<TokenLogprobs> token_logprobs) {
  if (!first_token) first_token = now;
  if (is_eos && !request.ignore_eos) return FinishReason::kStop;
  tokens.push_back(token);
  generated.push_back(token);
  const TokenLogprobs* reported = nullptr;
  if (token_logprobs.has_value()) {
    logprobs.push_back(*std::move(token_logprobs));
    reported = &logprobs.back();
  }
  if (tokenizer != nullptr) {
    if (!detokenizer_) detokenizer_.emplace(*tokenizer, /*skip_special_tokens=*/true);
    if (AppendText(detokenizer_->Push(token))) {
      Stream(token, text_.size(), reported);
      return FinishReason::kStop;
    }
  }
  size_t safe = text_.size() > stop_holdback_ ? text_.size() - stop_holdback_ : 0;
  // Never cut inside a UTF-8 sequence: back up to the start of the character.
  while (safe > streamed_ && safe < text_.size() &&
         (static_cast<unsigned char>(text_[safe]) & 0xC0) == 0x80) {
    --safe;
  }
  Stream(token, std::max(safe, streamed_), reported);
  if (static_cast<int>(generated.size()) >= request.max_tokens) return FinishReason::kLength;
  return std::nullopt;
}

RequestResult RequestState::MakeResult(FinishReason reason, absl::Status status,
                                       Clock::time_point now) {
  // Bytes of a character still incomplete when generation ended (U+FFFD after the flush, as in
  // a full decode). They may complete a stop string; that is then a stop like any other.
  if (detokenizer_ && !stopped_by_string_ && AppendText(detokenizer_->Flush()) &&
      reason == FinishReason::kLength) {
    reason = FinishReason::kStop;
  }
  if (streamed_ < text_.size()) Stream(-1, text_.size(), nullptr);  // flush held-back text
  RequestResult result;
  result.tokens = generated;
  result.logprobs = logprobs;
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
