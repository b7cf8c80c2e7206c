// Every malformed safetensors file must become a clear error naming the file and the tensor.
#include "formats/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace loraserve {
namespace {

std::string Pack(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string Floats(std::vector<float> values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

absl::Status ParseError(const std::string& bytes) {
  auto file = SafetensorsFile::FromBuffer(bytes, "test.safetensors");
  return file.status();
}

void ExpectError(const std::string& bytes, const std::string& fragment) {
  absl::Status status = ParseError(bytes);
  ASSERT_FALSE(status.ok()) << "expected an error containing: " << fragment;
  EXPECT_NE(std::string(status.message()).find(fragment), std::string::npos) << status.message();
  EXPECT_NE(std::string(status.message()).find("test.safetensors"), std::string::npos);
}

TEST(Safetensors, ReadsValidFileAndConvertsDtypes) {
  const std::string bf16 = std::string("\x80\x3f\x00\x40", 4);  // 1.0, 2.0 in bf16
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]},"__metadata__":{"format":"pt"}})";
  auto file = SafetensorsFile::FromBuffer(Pack(header, Floats({1, 2, 3, 4}) + bf16), "t");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  const std::vector<int64_t> shape_a = {2, 2};
  auto a = (*file)->ReadFloat("a", shape_a);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, (std::vector<float>{1, 2, 3, 4}));
  const std::vector<int64_t> shape_b = {2};
  auto b = (*file)->ReadFloat("b", shape_b);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (std::vector<float>{1, 2}));
}

// Found by the safetensors fuzzer: reading a zero-element tensor passed null buffers to memcpy.
TEST(Safetensors, EmptyTensorReadsAsEmpty) {
  const std::string header = R"({"e":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]}})";
  auto file = SafetensorsFile::FromBuffer(Pack(header, ""), "t");
  ASSERT_TRUE(file.ok()) << file.status();
  const std::vector<int64_t> shape = {0, 5};
  auto e = (*file)->ReadFloat("e", shape);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->empty());
}

TEST(Safetensors, TruncatedFile) { ExpectError("abc", "shorter than the 8-byte header"); }

TEST(Safetensors, HeaderLengthBeyondFile) {
  std::string bytes = Pack("{}", "");
  bytes[0] = 100;
  ExpectError(bytes, "runs past the end of the file");
}

TEST(Safetensors, HugeHeaderLength) {
  std::string bytes(16, '\0');
  bytes[7] = 0x7f;
  ExpectError(bytes, "exceeds the limit");
}

TEST(Safetensors, InvalidJsonHeader) { ExpectError(Pack("{not json", ""), "not valid JSON"); }

TEST(Safetensors, HeaderNotObject) { ExpectError(Pack("[1,2]", ""), "not a JSON object"); }

TEST(Safetensors, UnknownDtype) {
  ExpectError(Pack(R"({"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", Floats({1})),
              "tensor 'w': unknown dtype 'Q4'");
}

TEST(Safetensors, OffsetsOutOfRange) {
  ExpectError(Pack(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Floats({1})),
              "tensor 'w': data_offsets end 8 is beyond the data section");
}

TEST(Safetensors, ReversedOffsets) {
  ExpectError(Pack(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", Floats({1})),
              "tensor 'w': data_offsets [4, 0] are reversed");
}

TEST(Safetensors, OverlappingOffsets) {
  ExpectError(Pack(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                   Floats({1, 2, 3})),
              "overlapping data_offsets");
}

TEST(Safetensors, ShapeSizeMismatch) {
  ExpectError(Pack(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", Floats({1, 2})),
              "tensor 'w': shape [3] of F32 needs 12 bytes but data_offsets span 8");
}

TEST(Safetensors, NegativeDimension) {
  ExpectError(Pack(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", Floats({1})),
              "tensor 'w': shape has a non-integer or negative dim");
}

TEST(Safetensors, MissingFields) {
  ExpectError(Pack(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", Floats({1})),
              "tensor 'w': missing dtype");
  ExpectError(Pack(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", Floats({1})),
              "tensor 'w': missing shape");
  ExpectError(Pack(R"({"w":{"dtype":"F32","shape":[1]}})", Floats({1})),
              "tensor 'w': data_offsets must be two");
}

TEST(Safetensors, MissingTensorAndWrongShapeOnRead) {
  auto file = SafetensorsFile::FromBuffer(
      Pack(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Floats({1, 2})), "t.st");
  ASSERT_TRUE(file.ok());
  const std::vector<int64_t> shape = {2};
  auto missing = (*file)->ReadFloat("v", shape);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(missing.status().message()).find("missing tensor 'v'"), std::string::npos);
  const std::vector<int64_t> wrong = {1, 2};
  auto mismatched = (*file)->ReadFloat("w", wrong);
  ASSERT_FALSE(mismatched.ok());
  EXPECT_NE(std::string(mismatched.status().message()).find("has shape [2], expected [1, 2]"),
            std::string::npos);
}

TEST(Safetensors, IntegerTensorIsNotReadAsFloat) {
  auto file = SafetensorsFile::FromBuffer(
      Pack(R"({"w":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})", Floats({1})), "t.st");
  ASSERT_TRUE(file.ok());
  const std::vector<int64_t> shape = {1};
  EXPECT_FALSE((*file)->ReadFloat("w", shape).ok());
}

TEST(Safetensors, OpenMapsRealFileAndReportsMissingFile) {
  const auto dir = std::filesystem::temp_directory_path() / "loraserve_st_test";
  std::filesystem::create_directories(dir);
  const auto path = (dir / "model.safetensors").string();
  {
    std::ofstream out(path, std::ios::binary);
    out << Pack(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", Floats({5}));
  }
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto folder = SafetensorsFolder::Open(dir.string());
  ASSERT_TRUE(folder.ok()) << folder.status();
  EXPECT_TRUE(folder->Has("w"));
  auto missing = SafetensorsFile::Open((dir / "nope.safetensors").string());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  // Truncating the real file turns into a clear error, not a crash.
  std::filesystem::resize_file(path, 20);
  auto truncated = SafetensorsFile::Open(path);
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(std::string(truncated.status().message()).find(path), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(SafetensorsFolder, ShardIndexPointingAtWrongShardIsAnError) {
  const auto dir = std::filesystem::temp_directory_path() / "loraserve_st_index_test";
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir / "a.safetensors", std::ios::binary);
    out << Pack(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", Floats({5}));
    std::ofstream index(dir / "model.safetensors.index.json");
    index << R"({"weight_map":{"w":"a.safetensors","v":"a.safetensors"}})";
  }
  auto folder = SafetensorsFolder::Open(dir.string());
  ASSERT_FALSE(folder.ok());
  EXPECT_NE(std::string(folder.status().message()).find("'v'"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace loraserve
