// Kills a writer process mid-put (fork + SIGKILL at delays spread over the whole put) and checks
// that after the restart scan the store holds either the complete adapter or nothing of it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "adapters/adapter_store.h"
#include "adapters/sha256.h"
#include "gtest/gtest.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve {
namespace {

namespace fs = std::filesystem;
using ::loraserve::testing::LoraConfigJson;
using ::loraserve::testing::SafetensorsBytes;
using ::loraserve::testing::TempDir;
using ::loraserve::testing::WriteFile;

constexpr int kIterations = 6;

// A 16 MiB adapter file, large enough that a put spans many write() and fsync() calls.
void WriteLargeAdapter(const std::string& dir) {
  std::vector<float> values(4 << 20);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
  for (float& v : values) v = dist(rng);
  WriteFile(dir + "/adapter_model.safetensors",
            SafetensorsBytes({{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                               "F32",
                               {static_cast<int64_t>(values.size() / 16), 16},
                               values}}));
  WriteFile(dir + "/adapter_config.json", LoraConfigJson());
}

// The put a crashing writer performs; the validator pause widens the window between the data
// files and the manifest, the stage a crash is most likely to expose.
absl::Status PutOnce(const std::string& root, const std::string& id, const std::string& source) {
  auto store = AdapterStore::Open(root, {.verify_hashes_on_open = true, .log = [](auto) {}});
  if (!store.ok()) return store.status();
  PutOptions options;
  options.validator = [](const std::string&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return absl::OkStatus();
  };
  return (*store)->PutFromDirectory(id, source, options).status();
}

TEST(AdapterStoreCrashTest, KilledPutLeavesAllOrNothing) {
  TempDir source;
  WriteLargeAdapter(source.path());
  std::map<std::string, std::string> source_sha;
  for (const char* name : {"adapter_config.json", "adapter_model.safetensors"}) {
    source_sha[name] = *Sha256File(source.path() + "/" + name);
  }
  TempDir scratch;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(PutOnce(scratch.path(), "timing", source.path()).ok());
  const auto put_time = std::chrono::steady_clock::now() - start;

  TempDir root;
  int present = 0, absent = 0, interrupted = 0;
  for (int i = 0; i < kIterations; ++i) {
    const std::string id = "crash-" + std::to_string(i);
    // Spread the kill from the first instant to past the end of a typical put (the child also
    // pays for fork and Open).
    const auto delay = put_time * i / (kIterations - 1) * 3 / 2;
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) _exit(PutOnce(root.path(), id, source.path()).ok() ? 0 : 1);
    std::this_thread::sleep_for(delay);
    ::kill(pid, SIGKILL);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);

    std::vector<std::string> log;
    auto store = AdapterStore::Open(
        root.path(), {.verify_hashes_on_open = true,
                      .log = [&](std::string_view line) { log.emplace_back(line); }});
    ASSERT_TRUE(store.ok()) << store.status();
    if (!log.empty()) ++interrupted;  // the scan removed a staging leftover
    auto entry = (*store)->Get(id);
    if (entry.ok()) {
      ++present;
      ASSERT_EQ(entry->files.size(), 2u);
      for (const StoredFile& file : entry->files) {
        EXPECT_EQ(*Sha256File(entry->path + "/" + file.name), source_sha.at(file.name))
            << id << " " << file.name;
      }
    } else {
      ++absent;
      EXPECT_EQ(entry.status().code(), absl::StatusCode::kNotFound);
      EXPECT_FALSE(fs::exists(root.path() + "/" + id));
    }
    // Published entries are never damaged, so nothing is ever quarantined; leftovers are gone.
    EXPECT_TRUE(fs::is_empty(root.path() + "/.quarantine")) << id;
    EXPECT_TRUE(fs::is_empty(root.path() + "/.tmp")) << id;
    EXPECT_EQ((*store)->List().size(), static_cast<size_t>(present));
  }
  std::cout << "put took " << std::chrono::duration<double, std::milli>(put_time).count()
            << " ms; after kills: " << present << " present, " << absent << " absent, "
            << interrupted << " killed mid-put\n";
}

}  // namespace
}  // namespace loraserve
