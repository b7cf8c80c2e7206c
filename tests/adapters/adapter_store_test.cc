// AdapterStore behaviour through its public interface: put/get/list/delete, id and upload
// validation, the validator hook, expected sha256, and the start-up scan's cleanup and
// quarantine of damaged entries.
#include "adapters/adapter_store.h"

#include <filesystem>
#include <thread>

#include "absl/strings/ascii.h"
#include "adapters/lora_adapter.h"
#include "adapters/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve {
namespace {

namespace fs = std::filesystem;
using ::loraserve::testing::AddModule;
using ::loraserve::testing::LoraConfigJson;
using ::loraserve::testing::ReadFile;
using ::loraserve::testing::SafetensorsBytes;
using ::loraserve::testing::TempDir;
using ::loraserve::testing::TestTensor;
using ::loraserve::testing::TinyBase;
using ::loraserve::testing::WriteFile;
using ::testing::HasSubstr;

std::map<std::string, std::string> AdapterFiles() {
  std::vector<TestTensor> tensors;
  AddModule(tensors, TinyBase(), 0, Module::kQ, 4);
  AddModule(tensors, TinyBase(), 1, Module::kV, 4);
  return {{"adapter_config.json", LoraConfigJson()},
          {"adapter_model.safetensors", SafetensorsBytes(tensors)}};
}

// Everything under the store root except the lock file, as relative paths.
std::vector<std::string> Tree(const std::string& root) {
  std::vector<std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    const std::string rel = fs::relative(entry.path(), root).string();
    if (rel != ".lock") out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

class AdapterStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<AdapterStore> OpenStore() {
    AdapterStoreOptions options;
    options.log = [this](std::string_view line) { log_.emplace_back(line); };
    auto store = AdapterStore::Open(root_.path() + "/store", options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  std::string StoreRoot() const { return root_.path() + "/store"; }

  TempDir root_;
  std::vector<std::string> log_;
};

TEST_F(AdapterStoreTest, PutGetListDelete) {
  auto store = OpenStore();
  const auto files = AdapterFiles();
  auto put = store->PutFromFiles("alpha", files);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->path, StoreRoot() + "/alpha");
  EXPECT_EQ(put->adapter_sha256, Sha256Hex(files.at("adapter_model.safetensors")));
  ASSERT_EQ(put->files.size(), 2u);
  for (const StoredFile& file : put->files) {
    EXPECT_EQ(ReadFile(put->path + "/" + file.name), files.at(file.name));
    EXPECT_EQ(file.sha256, Sha256Hex(files.at(file.name)));
    EXPECT_EQ(file.size, files.at(file.name).size());
  }
  EXPECT_TRUE(fs::exists(put->path + "/" + kStoreManifestFile));
  // The stored entry is a PEFT folder the loader accepts.
  auto adapter = LoadPeftAdapter("alpha", put->path, TinyBase(), {});
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->sha256, put->adapter_sha256);

  ASSERT_TRUE(store->PutFromFiles("beta", files).ok());
  auto got = store->Get("alpha");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->adapter_sha256, put->adapter_sha256);
  std::vector<std::string> ids;
  for (const StoredAdapter& entry : store->List()) ids.push_back(entry.id);
  EXPECT_THAT(ids, ::testing::ElementsAre("alpha", "beta"));

  ASSERT_TRUE(store->Delete("alpha").ok());
  EXPECT_EQ(store->Get("alpha").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(StoreRoot() + "/alpha"));
  EXPECT_EQ(store->Delete("alpha").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->List().size(), 1u);
  EXPECT_TRUE(fs::is_empty(StoreRoot() + "/.trash"));
  EXPECT_TRUE(fs::is_empty(StoreRoot() + "/.tmp"));
}

TEST_F(AdapterStoreTest, PutFromDirectoryCopiesOnlyAdapterFiles) {
  auto store = OpenStore();
  TempDir source;
  for (const auto& [name, bytes] : AdapterFiles()) WriteFile(source.path() + "/" + name, bytes);
  WriteFile(source.path() + "/README.md", "# my adapter\n");
  WriteFile(source.path() + "/training_args.bin", "not copied");
  auto put = store->PutFromDirectory("from-dir", source.path());
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->files.size(), 3u);
  EXPECT_FALSE(fs::exists(put->path + "/training_args.bin"));
  EXPECT_EQ(ReadFile(put->path + "/README.md"), "# my adapter\n");

  TempDir empty;
  auto missing = store->PutFromDirectory("empty", empty.path());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("adapter_config.json"));
}

TEST_F(AdapterStoreTest, RejectsDuplicateId) {
  auto store = OpenStore();
  ASSERT_TRUE(store->PutFromFiles("dup", AdapterFiles()).ok());
  EXPECT_EQ(store->PutFromFiles("dup", AdapterFiles()).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(AdapterStoreTest, RejectsBadIds) {
  auto store = OpenStore();
  for (const std::string& id :
       {std::string("../x"), std::string(""), std::string(".hidden"), std::string("a/b"),
        std::string("-lead"), std::string("sp ace"), std::string(129, 'a')}) {
    auto put = store->PutFromFiles(id, AdapterFiles());
    EXPECT_EQ(put.status().code(), absl::StatusCode::kInvalidArgument) << id;
    EXPECT_THAT(std::string(put.status().message()), HasSubstr("adapter_id")) << id;
    EXPECT_EQ(store->Get(id).status().code(), absl::StatusCode::kInvalidArgument) << id;
  }
  EXPECT_TRUE(store->PutFromFiles(std::string(128, 'a'), AdapterFiles()).ok());
  EXPECT_TRUE(store->PutFromFiles("Llama-3.2_1B.v2", AdapterFiles()).ok());
}

TEST_F(AdapterStoreTest, RejectsUnexpectedUploadFiles) {
  auto store = OpenStore();
  auto files = AdapterFiles();
  files["../../etc/passwd"] = "x";
  EXPECT_EQ(store->PutFromFiles("a", files).status().code(), absl::StatusCode::kInvalidArgument);
  auto partial = AdapterFiles();
  partial.erase("adapter_model.safetensors");
  EXPECT_EQ(store->PutFromFiles("a", partial).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(store->List().empty());
}

TEST_F(AdapterStoreTest, ValidatorRejectionLeavesStoreUnchanged) {
  auto store = OpenStore();
  ASSERT_TRUE(store->PutFromFiles("keep", AdapterFiles()).ok());
  const std::vector<std::string> before = Tree(StoreRoot());
  std::string seen_dir;
  PutOptions options;
  options.validator = [&](const std::string& staged) {
    seen_dir = staged;
    // The validator sees the complete staged files (and can parse them).
    EXPECT_TRUE(LoadPeftAdapter("new", staged, TinyBase(), {}).ok());
    return absl::InvalidArgumentError("rejected by test");
  };
  auto put = store->PutFromFiles("new", AdapterFiles(), options);
  EXPECT_EQ(put.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(put.status().message(), "rejected by test");
  EXPECT_THAT(seen_dir, HasSubstr("/.tmp/"));
  EXPECT_EQ(Tree(StoreRoot()), before);
  EXPECT_EQ(store->Get("new").status().code(), absl::StatusCode::kNotFound);
  // The id is free again afterwards.
  EXPECT_TRUE(store->PutFromFiles("new", AdapterFiles()).ok());
}

TEST_F(AdapterStoreTest, ValidatesWithTheAdapterParser) {
  auto store = OpenStore();
  PutOptions options;
  options.validator = [](const std::string& staged) {
    ModelConfig other = TinyBase();
    other.hidden_size = 32;  // a different base model
    return LoadPeftAdapter("x", staged, other, {}).status();
  };
  auto put = store->PutFromFiles("wrong-base", AdapterFiles(), options);
  EXPECT_EQ(put.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(put.status().message()), HasSubstr("different base model"));
  EXPECT_TRUE(store->List().empty());
}

TEST_F(AdapterStoreTest, ExpectedSha256) {
  auto store = OpenStore();
  const auto files = AdapterFiles();
  const std::string digest = Sha256Hex(files.at("adapter_model.safetensors"));
  PutOptions wrong;
  wrong.expected_sha256 = std::string(64, '0');
  auto put = store->PutFromFiles("a", files, wrong);
  EXPECT_EQ(put.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(put.status().message()), HasSubstr("sha256 mismatch"));
  EXPECT_TRUE(fs::is_empty(StoreRoot() + "/.tmp"));
  PutOptions malformed;
  malformed.expected_sha256 = "abc";
  EXPECT_EQ(store->PutFromFiles("a", files, malformed).status().code(),
            absl::StatusCode::kInvalidArgument);
  PutOptions right;
  right.expected_sha256 = absl::AsciiStrToUpper(digest);
  EXPECT_TRUE(store->PutFromFiles("a", files, right).ok());
}

TEST_F(AdapterStoreTest, SecondOpenWhileHeldFails) {
  auto store = OpenStore();
  auto second = AdapterStore::Open(StoreRoot());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  store.reset();
  EXPECT_TRUE(AdapterStore::Open(StoreRoot()).ok());
}

TEST_F(AdapterStoreTest, ReopenKeepsEntries) {
  auto store = OpenStore();
  auto put = store->PutFromFiles("persist", AdapterFiles());
  ASSERT_TRUE(put.ok());
  store.reset();
  store = OpenStore();
  auto got = store->Get("persist");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->adapter_sha256, put->adapter_sha256);
  EXPECT_EQ(got->created_unix, put->created_unix);
  EXPECT_TRUE(log_.empty());
}

TEST_F(AdapterStoreTest, ScanRemovesLeftoversAndQuarantinesDamage) {
  auto store = OpenStore();
  for (const char* id : {"good", "flipped", "truncated", "no-manifest", "extra-file"}) {
    ASSERT_TRUE(store->PutFromFiles(id, AdapterFiles()).ok());
  }
  store.reset();
  const std::string root = StoreRoot();
  // Same size, one byte changed: only the hash can catch it.
  std::string bytes = ReadFile(root + "/flipped/adapter_model.safetensors");
  bytes[bytes.size() - 1] ^= 1;
  WriteFile(root + "/flipped/adapter_model.safetensors", bytes);
  fs::resize_file(root + "/truncated/adapter_model.safetensors", 100);
  fs::remove(root + "/no-manifest/" + std::string(kStoreManifestFile));
  WriteFile(root + "/extra-file/stray.bin", "x");
  fs::create_directories(root + "/.tmp/half.123.0");
  WriteFile(root + "/.tmp/half.123.0/adapter_config.json", "{");
  fs::create_directories(root + "/.trash/gone.123.0");
  WriteFile(root + "/not-a-dir", "x");

  store = OpenStore();
  std::vector<std::string> ids;
  for (const StoredAdapter& entry : store->List()) ids.push_back(entry.id);
  EXPECT_THAT(ids, ::testing::ElementsAre("good"));
  EXPECT_TRUE(fs::is_empty(root + "/.tmp"));
  EXPECT_TRUE(fs::is_empty(root + "/.trash"));
  std::vector<std::string> quarantined;
  for (const auto& entry : fs::directory_iterator(root + "/.quarantine")) {
    quarantined.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(quarantined.size(), 5u);
  for (const char* id : {"flipped", "truncated", "no-manifest", "extra-file", "not-a-dir"}) {
    EXPECT_TRUE(std::any_of(quarantined.begin(), quarantined.end(), [&](const std::string& q) {
      return q.starts_with(std::string(id) + ".");
    })) << id;
    EXPECT_TRUE(std::any_of(log_.begin(), log_.end(), [&](const std::string& line) {
      return line.find(std::string("quarantined '") + id + "'") != std::string::npos;
    })) << id;
  }
  auto sha_line = std::find_if(log_.begin(), log_.end(), [](const std::string& line) {
    return line.find("'flipped'") != std::string::npos;
  });
  ASSERT_NE(sha_line, log_.end());
  EXPECT_THAT(*sha_line, HasSubstr("sha256"));
  // A quarantined id can be uploaded again.
  EXPECT_TRUE(store->PutFromFiles("flipped", AdapterFiles()).ok());
}

TEST_F(AdapterStoreTest, ConcurrentPutsOfOneIdAdmitExactlyOne) {
  auto store = OpenStore();
  const auto files = AdapterFiles();
  std::atomic<int> ok{0}, exists{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto same = store->PutFromFiles("contended", files);
      (same.ok() ? ok : exists) += 1;
      if (!same.ok()) EXPECT_EQ(same.status().code(), absl::StatusCode::kAlreadyExists);
      EXPECT_TRUE(store->PutFromFiles("own-" + std::to_string(t), files).ok());
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(exists.load(), 3);
  EXPECT_EQ(store->List().size(), 5u);
}

}  // namespace
}  // namespace loraserve
