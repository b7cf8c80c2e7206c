// Calls any RPC of the server by its full name with serialized request bytes, whatever its
// streaming kind: every gRPC method is a bidirectional stream on the wire, so one generic stream
// that writes the request once and half-closes reaches unary, server- and client-streaming
// methods alike. Tests that enumerate methods from service descriptors call them this way.
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace loraserve::testing {

struct RawCallResult {
  grpc::Status status;
  int responses = 0;  // messages the server sent before its status
};

using Metadata = std::vector<std::pair<std::string, std::string>>;

// `method` is "/package.Service/Method". `request` may be any bytes (fuzzing sends garbage).
inline RawCallResult CallRaw(const std::shared_ptr<grpc::Channel>& channel,
                             const std::string& method, const std::string& request,
                             const Metadata& metadata = {},
                             std::chrono::seconds timeout = std::chrono::seconds(60)) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  for (const auto& [key, value] : metadata) context.AddMetadata(key, value);
  auto call = stub.PrepareCall(&context, method, &queue);
  // Each operation is awaited before the next starts, so the tag is the step number.
  auto await = [&](intptr_t step) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(queue.Next(&tag, &ok)) << method;
    EXPECT_EQ(tag, reinterpret_cast<void*>(step)) << method;
    return ok;
  };
  RawCallResult result;
  call->StartCall(reinterpret_cast<void*>(1));
  if (await(1)) {
    grpc::Slice slice(request);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, reinterpret_cast<void*>(2));
    // A refused call may already be finished: the write then fails, and reading tells why.
    if (await(2)) {
      call->WritesDone(reinterpret_cast<void*>(3));
      await(3);
    }
    grpc::ByteBuffer reply;
    for (;;) {
      call->Read(&reply, reinterpret_cast<void*>(4));
      if (!await(4)) break;
      ++result.responses;
    }
  }
  call->Finish(&result.status, reinterpret_cast<void*>(5));
  await(5);
  queue.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (queue.Next(&tag, &ok)) {
  }
  return result;
}

}  // namespace loraserve::testing
