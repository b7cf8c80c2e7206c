// The UploadAdapter stream without gRPC: the header first and once, chunks in order per file,
// the byte limit on the header's promise and on what arrives, and errors that stay final.
#include "server/upload_assembler.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loraserve::server {
namespace {

using ::testing::HasSubstr;

UploadHeaderFields Header(std::string id = "my-adapter", uint64_t total = 0) {
  return {.adapter_id = std::move(id), .sha256 = "", .peft_format = true, .total_bytes = total};
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST(UploadAssemblerTest, CollectsChunksPerFileInOrder) {
  UploadAssembler upload(100);
  ASSERT_TRUE(upload.AddHeader(Header()).ok());
  ASSERT_TRUE(upload.AddChunk("adapter_config.json", 0, "{\"a\"").ok());
  ASSERT_TRUE(upload.AddChunk("adapter_model.safetensors", 0, "xyz").ok());
  ASSERT_TRUE(upload.AddChunk("adapter_config.json", 4, ": 1}").ok());
  ASSERT_TRUE(upload.AddChunk("adapter_config.json", 8, "").ok());
  ASSERT_TRUE(upload.Finish().ok());
  EXPECT_EQ(upload.files().at("adapter_config.json"), "{\"a\": 1}");
  EXPECT_EQ(upload.files().at("adapter_model.safetensors"), "xyz");
  EXPECT_EQ(upload.received_bytes(), 11u);
  EXPECT_EQ(upload.header()->adapter_id, "my-adapter");
}

TEST(UploadAssemblerTest, TheHeaderComesFirstAndOnce) {
  UploadAssembler chunk_first(100);
  EXPECT_THAT(Message(chunk_first.AddChunk("a", 0, "x")), HasSubstr("must be the header"));
  UploadAssembler empty_first(100);
  EXPECT_THAT(Message(empty_first.AddEmpty()), HasSubstr("must be the header"));
  UploadAssembler twice(100);
  ASSERT_TRUE(twice.AddHeader(Header()).ok());
  EXPECT_THAT(Message(twice.AddHeader(Header())), HasSubstr("sent twice"));
  UploadAssembler none(100);
  EXPECT_THAT(Message(none.Finish()), HasSubstr("had no header"));
}

TEST(UploadAssemblerTest, HeaderFieldsAreChecked) {
  UploadAssembler format(100);
  UploadHeaderFields other = Header();
  other.peft_format = false;
  EXPECT_THAT(Message(format.AddHeader(other)), HasSubstr("header.format"));
  UploadAssembler id(100);
  EXPECT_THAT(Message(id.AddHeader(Header("../escape"))), HasSubstr("header.adapter_id"));
  UploadAssembler promised(100);
  const absl::Status too_large = promised.AddHeader(Header("a", 101));
  EXPECT_EQ(too_large.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(Message(too_large), HasSubstr("--max-upload-bytes"));
}

TEST(UploadAssemblerTest, ChunksAreCheckedAndCounted) {
  UploadAssembler name(100);
  ASSERT_TRUE(name.AddHeader(Header()).ok());
  EXPECT_THAT(Message(name.AddChunk("", 0, "x")), HasSubstr("chunk.file_name"));
  UploadAssembler offset(100);
  ASSERT_TRUE(offset.AddHeader(Header()).ok());
  ASSERT_TRUE(offset.AddChunk("f", 0, "abc").ok());
  EXPECT_THAT(Message(offset.AddChunk("f", 2, "d")), HasSubstr("chunk.offset: 2 for f but 3"));
  UploadAssembler limit(10);
  ASSERT_TRUE(limit.AddHeader(Header()).ok());
  ASSERT_TRUE(limit.AddChunk("a", 0, "12345").ok());
  ASSERT_TRUE(limit.AddChunk("b", 0, "12345").ok());
  EXPECT_EQ(limit.AddChunk("a", 5, "6").code(), absl::StatusCode::kResourceExhausted);
  UploadAssembler empty(100);
  ASSERT_TRUE(empty.AddHeader(Header()).ok());
  EXPECT_THAT(Message(empty.AddEmpty()), HasSubstr("empty upload message"));
}

TEST(UploadAssemblerTest, TheFirstErrorIsFinal) {
  UploadAssembler upload(100);
  ASSERT_TRUE(upload.AddHeader(Header()).ok());
  const absl::Status first = upload.AddChunk("f", 7, "x");
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(upload.AddChunk("f", 0, "x"), first);
  EXPECT_EQ(upload.AddEmpty(), first);
  EXPECT_EQ(upload.Finish(), first);
  EXPECT_EQ(upload.files().at("f"), "");
}

}  // namespace
}  // namespace loraserve::server
