#include "server/http/generation_exchange.h"

namespace loraserve::server::http {

class GenerationExchange::Choice final : public GenerationSink {
 public:
  Choice(GenerationExchange* owner, ServingState* state, int index)
      : owner_(owner), index_(index), call_(state, this) {}

  void Start(std::shared_ptr<GenerationExchange> keep, absl::StatusOr<GenerationInput> input) {
    keep_ = std::move(keep);
    call_.Start(std::move(input));
  }
  void Cancel() { call_.Cancel(); }

  void OnToken(const TokenEvent& event) override {
    owner_->Push(Event{index_, event, std::nullopt});
  }
  void OnFinish(const GenerationOutcome& outcome) override {
    // Released last: dropping it may destroy the exchange, this choice and its call, which
    // GenerationCall allows once OnFinish has been entered.
    std::shared_ptr<GenerationExchange> keep = std::move(keep_);
    owner_->Push(Event{index_, std::nullopt, outcome});
  }

 private:
  GenerationExchange* const owner_;
  const int index_;
  GenerationCall call_;
  std::shared_ptr<GenerationExchange> keep_;
};

std::shared_ptr<GenerationExchange> GenerationExchange::Create(ServingState* state, int choices) {
  std::shared_ptr<GenerationExchange> exchange(new GenerationExchange());
  exchange->outcomes_.resize(choices);
  for (int i = 0; i < choices; ++i) {
    exchange->choices_.push_back(std::make_unique<Choice>(exchange.get(), state, i));
  }
  return exchange;
}

GenerationExchange::~GenerationExchange() = default;

void GenerationExchange::Start(std::vector<absl::StatusOr<GenerationInput>> inputs) {
  for (size_t i = 0; i < choices_.size(); ++i) {
    choices_[i]->Start(shared_from_this(), std::move(inputs[i]));
  }
}

void GenerationExchange::CancelAll() {
  for (auto& choice : choices_) choice->Cancel();
}

void GenerationExchange::Push(Event event) {
  std::lock_guard lock(mutex_);
  if (event.finish.has_value()) {
    outcomes_[event.choice] = *event.finish;
    ++finished_;
  }
  events_.push_back(std::move(event));
  changed_.notify_all();
}

bool GenerationExchange::WaitEvents(std::deque<Event>* out, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [this] { return !events_.empty(); })) return false;
  while (!events_.empty()) {
    out->push_back(std::move(events_.front()));
    events_.pop_front();
  }
  return true;
}

bool GenerationExchange::WaitFinished(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout,
                           [this] { return finished_ == static_cast<int>(choices_.size()); });
}

std::optional<GenerationOutcome> GenerationExchange::outcome(int i) const {
  std::lock_guard lock(mutex_);
  return outcomes_[i];
}

}  // namespace loraserve::server::http
