// The generations of one HTTP request (prompts x n choices) as one object the HTTP thread
// waits on: every choice's tokens and outcome land in one queue, in arrival order. Each choice
// holds the exchange alive until its OnFinish, so a client that leaves early (its handler
// returns) never frees a call the engine still reports to.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "server/generation_call.h"
#include "server/serving_state.h"

namespace loraserve::server::http {

class GenerationExchange : public std::enable_shared_from_this<GenerationExchange> {
 public:
  struct Event {
    int choice = 0;
    std::optional<TokenEvent> token;          // a token (or the final flush)
    std::optional<GenerationOutcome> finish;  // the choice's last event
  };

  static std::shared_ptr<GenerationExchange> Create(ServingState* state, int choices);
  ~GenerationExchange();

  // Starts every choice, in order; inputs.size() == choices. Rejections (invalid input, unknown
  // adapter, queue full) finish their choice at once.
  void Start(std::vector<absl::StatusOr<GenerationInput>> inputs);
  // The client is gone: every unfinished choice is cancelled (and still finishes).
  void CancelAll();

  // Moves the queued events into `out`, waiting up to `timeout` for the first. False when none
  // came in time.
  bool WaitEvents(std::deque<Event>* out, std::chrono::milliseconds timeout);
  // Waits until every choice finished, up to `timeout`.
  bool WaitFinished(std::chrono::milliseconds timeout);
  // Choice i's outcome once it finished (after WaitFinished, or its finish event).
  std::optional<GenerationOutcome> outcome(int i) const;
  int size() const { return static_cast<int>(choices_.size()); }

 private:
  class Choice;
  GenerationExchange() = default;
  void Push(Event event);

  std::vector<std::unique_ptr<Choice>> choices_;
  mutable std::mutex mutex_;  // guards events_, outcomes_, finished_
  std::condition_variable changed_;
  std::deque<Event> events_;
  std::vector<std::optional<GenerationOutcome>> outcomes_;
  int finished_ = 0;
};

}  // namespace loraserve::server::http
