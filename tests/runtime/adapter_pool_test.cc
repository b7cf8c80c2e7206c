// The adapter pool's page accounting across ranks: an adapter occupies exactly its rank's rows
// (rank x (in + out) units per module, nothing padded to the largest rank the server accepts),
// rows never overlap or straddle a page, and the pages it takes are that many units rounded up
// to whole pages, so a rank-1 adapter next to a rank-512 one costs rank-1 bytes.
#include "runtime/adapter_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "tests/runtime/test_model_fixture.h"

namespace loraserve {
namespace {

constexpr int kPoolPages = 1024;
const std::vector<Module> kAllLinear = {Module::kQ,    Module::kK,  Module::kV,   Module::kO,
                                        Module::kGate, Module::kUp, Module::kDown};

class AdapterPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::LoadTinyModel();
    ASSERT_NE(model_, nullptr);
    page_units_ = model_->KvLayout(16).page_floats();
    pages_ = std::make_unique<PagePool>(page_units_, kPoolPages);
    memory_ = *model_->backend().CreatePool(page_units_, kPoolPages);
    pool_ = std::make_unique<AdapterPool>(
        pages_.get(), memory_.get(), model_->config(),
        [this](int l, Module m) { return model_->Weight(l, m); }, AdapterStorage::kAuto);
  }

  // Pool units one rank row of every targeted module takes, summed over layers (fp32 rows).
  int64_t UnitsPerRank() const {
    int64_t units = 0;
    for (Module m : kAllLinear) {
      const ModuleDims dims = model_->config().Dims(m);
      units += dims.in + dims.out;
    }
    return units * model_->config().num_layers;
  }

  int64_t LongestRow() const {
    int64_t longest = 0;
    for (Module m : kAllLinear) {
      const ModuleDims dims = model_->config().Dims(m);
      longest = std::max<int64_t>({longest, dims.in, dims.out});
    }
    return longest;
  }

  std::unique_ptr<LlamaModel> model_;
  int64_t page_units_ = 0;
  std::unique_ptr<PagePool> pages_;
  std::unique_ptr<PoolStorage> memory_;
  std::unique_ptr<AdapterPool> pool_;
};

TEST_F(AdapterPoolTest, RowsAndPagesAreProportionalToRankWithoutPadding) {
  const ModelConfig& config = model_->config();
  const int64_t per_rank = UnitsPerRank();
  // A page holds whole rows only, so each page wastes less than one row.
  const int64_t usable = page_units_ - LongestRow() + 1;
  std::vector<std::pair<int64_t, int64_t>> spans;  // [offset, offset + length) of every row
  int64_t pages_before = 0;
  for (int rank : {512, 1, 8}) {
    auto adapter = testing::RandomAdapter(config, "r" + std::to_string(rank), rank,
                                          static_cast<uint32_t>(rank), kAllLinear);
    const int64_t units = per_rank * rank;
    const int64_t pages = pool_->PagesNeeded(*adapter);
    EXPECT_GE(pages, (units + page_units_ - 1) / page_units_) << "rank " << rank;
    EXPECT_LE(pages, (units + usable - 1) / usable) << "rank " << rank;

    auto resident = pool_->Acquire(adapter->id, adapter);
    ASSERT_TRUE(resident.ok()) << resident.status();
    const int64_t pages_after = pool_->stats().pages_used;
    EXPECT_EQ(pages_after - pages_before, pages) << "rank " << rank;
    pages_before = pages_after;

    int64_t stored = 0;
    for (int l = 0; l < config.num_layers; ++l) {
      for (Module m : kAllLinear) {
        const auto& slot = (*resident)->modules[l][static_cast<int>(m)];
        ASSERT_TRUE(slot.has_value());
        ASSERT_EQ(slot->rank, rank);
        ASSERT_EQ(std::ssize(slot->a_rows), rank);
        ASSERT_EQ(std::ssize(slot->b_cols), rank);
        const ModuleDims dims = config.Dims(m);
        for (int k = 0; k < rank; ++k) {
          spans.push_back({slot->a_rows[k], slot->a_rows[k] + dims.in});
          spans.push_back({slot->b_cols[k], slot->b_cols[k] + dims.out});
          stored += dims.in + dims.out;
          // Within one page.
          EXPECT_EQ(slot->a_rows[k] / page_units_, (slot->a_rows[k] + dims.in - 1) / page_units_);
          EXPECT_EQ(slot->b_cols[k] / page_units_, (slot->b_cols[k] + dims.out - 1) / page_units_);
        }
        // The rows hold this adapter's values (A row 0 and the last B column).
        const LoraModuleWeights& w = *adapter->modules[l][static_cast<int>(m)];
        auto a0 = memory_->Read(slot->a_rows[0], dims.in);
        ASSERT_TRUE(a0.ok());
        EXPECT_EQ(0, std::memcmp(a0->data(), w.a.data(), dims.in * sizeof(float)));
        auto b_last = memory_->Read(slot->b_cols[rank - 1], dims.out);
        ASSERT_TRUE(b_last.ok());
        for (int o = 0; o < dims.out; ++o) {
          float value;
          std::memcpy(&value, &(*b_last)[o], sizeof(float));
          ASSERT_EQ(value, w.b[static_cast<size_t>(o) * rank + rank - 1]) << o;
        }
      }
    }
    EXPECT_EQ(stored, units) << "rank " << rank;
  }
  // No two rows of any of the three adapters overlap.
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    ASSERT_LE(spans[i - 1].second, spans[i].first) << "rows " << i - 1 << " and " << i;
  }
}

TEST_F(AdapterPoolTest, SixteenBitRowsHalveThePagesAtEveryRank) {
  const ModelConfig& config = model_->config();
  for (int rank : {1, 8, 512}) {
    auto adapter = testing::RandomAdapter(config, "a", rank, 3, kAllLinear);
    const int64_t wide =
        AdapterPool::PagesNeeded(*adapter, config, page_units_, AdapterStorage::kF32);
    const int64_t narrow =
        AdapterPool::PagesNeeded(*adapter, config, page_units_, AdapterStorage::kBF16);
    // Every row length of the tiny model is even, so a bf16 row is exactly half the units.
    const int64_t units = UnitsPerRank() * rank / 2;
    EXPECT_GE(narrow, (units + page_units_ - 1) / page_units_) << "rank " << rank;
    EXPECT_LE(narrow, (wide + 1) / 2 + 1) << "rank " << rank;
  }
}

// SmolLM2-135M (hidden 576, intermediate 1536, 9 heads of 64, 3 KV heads, 30 layers) with its
// default 16-token KV page (30 x 2 x 16 x 192 units = 720 KiB): the pages of the table in
// docs/kernels_lora.md. Only ranks and shapes matter to the page count, so the modules hold no
// values.
TEST(AdapterPoolPagesTest, SmolLM2PagesPerRankMatchTheDocs) {
  ModelConfig config;
  config.hidden_size = 576;
  config.intermediate_size = 1536;
  config.num_layers = 30;
  config.num_heads = 9;
  config.num_kv_heads = 3;
  config.head_dim = 64;
  const int64_t page_units = int64_t{30} * 2 * 16 * 192;
  auto shaped = [&](int rank, const std::vector<Module>& modules) {
    LoraAdapter adapter;
    adapter.num_layers = config.num_layers;
    adapter.modules.resize(config.num_layers);
    for (auto& layer : adapter.modules) {
      for (Module m : modules) {
        LoraModuleWeights w;
        w.rank = rank;
        layer[static_cast<int>(m)] = std::move(w);
      }
    }
    return adapter;
  };
  struct Row {
    int rank;
    int64_t qv_fp32, qv_bf16, all_fp32, all_bf16;
  };
  for (const Row& row : {Row{1, 1, 1, 2, 1}, Row{8, 3, 2, 14, 7}, Row{64, 21, 10, 107, 54},
                         Row{256, 81, 41, 425, 213}, Row{512, 161, 81, 849, 425}}) {
    const LoraAdapter qv = shaped(row.rank, {Module::kQ, Module::kV});
    const LoraAdapter all = shaped(row.rank, kAllLinear);
    EXPECT_EQ(AdapterPool::PagesNeeded(qv, config, page_units, AdapterStorage::kF32), row.qv_fp32)
        << "r=" << row.rank;
    EXPECT_EQ(AdapterPool::PagesNeeded(qv, config, page_units, AdapterStorage::kBF16), row.qv_bf16)
        << "r=" << row.rank;
    EXPECT_EQ(AdapterPool::PagesNeeded(all, config, page_units, AdapterStorage::kF32), row.all_fp32)
        << "r=" << row.rank;
    EXPECT_EQ(AdapterPool::PagesNeeded(all, config, page_units, AdapterStorage::kBF16),
              row.all_bf16)
        << "r=" << row.rank;
  }
}

}  // namespace
}  // namespace loraserve
