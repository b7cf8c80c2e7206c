// Driving the Engine from a test: submit a request, collect what it streams and how it ends.
#pragma once

#include <gtest/gtest.h>

#include <future>
#include <memory>
#include <vector>

#include "runtime/engine.h"

namespace loraserve::testing {

struct Outcome {
  std::vector<int32_t> streamed;
  std::vector<TokenEvent> events;  // every on_token event, the final flush included
  RequestResult result;
};

// Submits and returns a future that completes when the request finishes.
inline std::future<Outcome> SubmitAsync(Engine& engine, GenerationRequest request,
                                        uint64_t* id_out = nullptr,
                                        std::function<void(const TokenEvent&)> extra = nullptr) {
  auto promise = std::make_shared<std::promise<Outcome>>();
  auto outcome = std::make_shared<Outcome>();
  RequestCallbacks callbacks;
  callbacks.on_token = [outcome, extra](const TokenEvent& e) {
    if (e.token >= 0) outcome->streamed.push_back(e.token);
    outcome->events.push_back(e);
    if (extra) extra(e);
  };
  callbacks.on_finish = [outcome, promise](const RequestResult& r) {
    outcome->result = r;
    promise->set_value(*outcome);
  };
  auto id = engine.Submit(std::move(request), std::move(callbacks));
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) promise->set_value(*outcome);
  if (id_out != nullptr && id.ok()) *id_out = *id;
  return promise->get_future();
}

inline GenerationRequest Greedy(std::vector<int32_t> prompt, int max_tokens,
                                std::vector<AdapterRef> adapters = {}) {
  GenerationRequest r;
  r.prompt_ids = std::move(prompt);
  r.max_tokens = max_tokens;
  r.adapters = std::move(adapters);
  r.ignore_eos = true;
  return r;
}

}  // namespace loraserve::testing
