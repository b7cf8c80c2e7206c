// Module by module, the fusion is one of three shapes: cat stacks the scaled factors (exact),
// factor-wise types merge A and B separately (PEFT's "task arithmetic" on the factors, lossy
// whenever two sources differ), and *_svd types merge full deltas and re-factor them. Math runs in
// double; the low-rank structure of a plain weighted sum is used so "svd" never forms the out x in
// delta (QR of the stacked factors, then an SVD of an R x R core).
#include "adapters/fusion.h"

#include <Eigen/Dense>
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loraserve {
namespace {

using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr std::array<std::pair<FuseCombination, const char*>, 11> kCombinationNames = {{
    {FuseCombination::kLinear, "linear"},
    {FuseCombination::kCat, "cat"},
    {FuseCombination::kSvd, "svd"},
    {FuseCombination::kTies, "ties"},
    {FuseCombination::kTiesSvd, "ties_svd"},
    {FuseCombination::kDareLinear, "dare_linear"},
    {FuseCombination::kDareTies, "dare_ties"},
    {FuseCombination::kDareLinearSvd, "dare_linear_svd"},
    {FuseCombination::kDareTiesSvd, "dare_ties_svd"},
    {FuseCombination::kMagnitudePrune, "magnitude_prune"},
    {FuseCombination::kMagnitudePruneSvd, "magnitude_prune_svd"},
}};

enum class Prune { kNone, kMagnitude, kRandom };
enum class Merge { kSum, kDisjoint };  // kDisjoint: TIES sign election + disjoint mean

struct Rule {
  Prune prune = Prune::kNone;
  Merge merge = Merge::kSum;
  bool svd = false;
};

Rule RuleFor(FuseCombination c) {
  switch (c) {
    case FuseCombination::kLinear:
    case FuseCombination::kCat:
      return {};
    case FuseCombination::kSvd:
      return {Prune::kNone, Merge::kSum, true};
    case FuseCombination::kTies:
      return {Prune::kMagnitude, Merge::kDisjoint, false};
    case FuseCombination::kTiesSvd:
      return {Prune::kMagnitude, Merge::kDisjoint, true};
    case FuseCombination::kDareLinear:
      return {Prune::kRandom, Merge::kSum, false};
    case FuseCombination::kDareTies:
      return {Prune::kRandom, Merge::kDisjoint, false};
    case FuseCombination::kDareLinearSvd:
      return {Prune::kRandom, Merge::kSum, true};
    case FuseCombination::kDareTiesSvd:
      return {Prune::kRandom, Merge::kDisjoint, true};
    case FuseCombination::kMagnitudePrune:
      return {Prune::kMagnitude, Merge::kSum, false};
    case FuseCombination::kMagnitudePruneSvd:
      return {Prune::kMagnitude, Merge::kSum, true};
  }
  return {};
}

// PEFT's magnitude_based_pruning: keeps the int(density * n) largest |values|.
void PruneMagnitude(std::vector<double>& x, double density) {
  const size_t keep = static_cast<size_t>(density * static_cast<double>(x.size()));
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::nth_element(order.begin(), order.begin() + static_cast<ptrdiff_t>(keep), order.end(),
                   [&](size_t a, size_t b) { return std::abs(x[a]) > std::abs(x[b]); });
  std::vector<char> kept(x.size(), 0);
  for (size_t i = 0; i < keep; ++i) kept[order[i]] = 1;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!kept[i]) x[i] = 0;
  }
}

// DARE: keeps each value with probability `density` and rescales it by 1 / density. The uniform
// draw is built from raw mt19937_64 output (fully specified by the standard), not from
// std::bernoulli_distribution (implementation-defined), so a seed means the same on every libc++.
void PruneRandom(std::vector<double>& x, double density, std::mt19937_64& rng) {
  const double rescale = 1.0 / density;
  for (double& v : x) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    v = u < density ? v * rescale : 0.0;
  }
}

double Sign(double v) { return v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0); }

// PEFT's merge_utils on equally sized task tensors: prune each, then a weighted sum or TIES.
std::vector<double> MergeTasks(std::vector<std::vector<double>> tasks,
                               const std::vector<double>& weights, const Rule& rule,
                               const FuseOptions& options, std::mt19937_64& rng) {
  const double density = options.density.value_or(1.0);
  if (rule.prune != Prune::kNone && density < 1.0) {
    for (std::vector<double>& task : tasks) {
      if (rule.prune == Prune::kMagnitude) {
        PruneMagnitude(task, density);
      } else {
        PruneRandom(task, density, rng);
      }
    }
  }
  const size_t n = tasks.front().size();
  std::vector<double> out(n, 0.0);
  if (rule.merge == Merge::kSum) {
    for (size_t t = 0; t < tasks.size(); ++t) {
      for (size_t i = 0; i < n; ++i) out[i] += weights[t] * tasks[t][i];
    }
    return out;
  }
  for (size_t i = 0; i < n; ++i) {
    double magnitude = 0;
    for (const std::vector<double>& task : tasks) {
      magnitude += options.majority_sign == MajoritySign::kTotal ? task[i] : Sign(task[i]);
    }
    const double majority = magnitude >= 0 ? 1.0 : -1.0;
    double sum = 0;
    int count = 0;
    for (size_t t = 0; t < tasks.size(); ++t) {
      if (Sign(tasks[t][i]) != majority) continue;
      sum += weights[t] * tasks[t][i];
      ++count;
    }
    out[i] = sum / std::max(count, 1);
  }
  return out;
}

std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }
std::vector<float> ToFloat(const double* data, size_t n) { return {data, data + n}; }

Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> MapF(
    const std::vector<float>& v, int rows, int cols) {
  return {v.data(), rows, cols};
}

// One source's contribution to a module.
struct Part {
  const LoraModuleWeights* weights;
  double weight;  // the user's w_i
};

// torch.quantile with linear interpolation.
double Quantile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double pos = q * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (pos - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

class ModuleFuser {
 public:
  ModuleFuser(const FuseOptions& options, int new_rank)
      : options_(options), rule_(RuleFor(options.combination)), new_rank_(new_rank) {}

  absl::StatusOr<LoraModuleWeights> Fuse(const std::vector<Part>& parts, int in, int out,
                                         const std::string& key, std::mt19937_64& rng) const {
    if (options_.combination == FuseCombination::kCat) return Cat(parts, in, out);
    if (rule_.svd) return Svd(parts, in, out, rng);
    return FactorWise(parts, key, rng);
  }

 private:
  // A = [w_i s_i A_i] stacked by rows, B = [B_i] by columns: B A = sum_i w_i s_i B_i A_i.
  static LoraModuleWeights Cat(const std::vector<Part>& parts, int in, int out) {
    LoraModuleWeights fused;
    for (const Part& p : parts) fused.rank += p.weights->rank;
    fused.scaling = 1.0f;
    fused.a.reserve(static_cast<size_t>(fused.rank) * in);
    fused.b.assign(static_cast<size_t>(out) * fused.rank, 0.0f);
    int column = 0;
    for (const Part& p : parts) {
      const double factor = p.weight * p.weights->scaling;
      for (float v : p.weights->a) fused.a.push_back(static_cast<float>(factor * v));
      const int r = p.weights->rank;
      for (int o = 0; o < out; ++o) {
        for (int j = 0; j < r; ++j) {
          fused.b[static_cast<size_t>(o) * fused.rank + column + j] =
              p.weights->b[static_cast<size_t>(o) * r + j];
        }
      }
      column += r;
    }
    return fused;
  }

  absl::StatusOr<LoraModuleWeights> FactorWise(const std::vector<Part>& parts,
                                               const std::string& key, std::mt19937_64& rng) const {
    const int rank = parts.front().weights->rank;
    std::vector<double> weights;
    std::vector<std::vector<double>> a_tasks, b_tasks;
    for (const Part& p : parts) {
      if (p.weights->rank != rank) {
        return absl::InvalidArgumentError(absl::StrCat(
            "module '", key, "' has different ranks in the sources (", rank, " and ",
            p.weights->rank, "); combination '", FuseCombinationName(options_.combination),
            "' needs equal ranks: use cat, or an *_svd combination with a "
            "target rank"));
      }
      weights.push_back(std::sqrt(p.weight * p.weights->scaling));
      a_tasks.push_back(ToDouble(p.weights->a));
      b_tasks.push_back(ToDouble(p.weights->b));
    }
    LoraModuleWeights fused;
    fused.rank = rank;
    fused.scaling = 1.0f;
    const std::vector<double> a = MergeTasks(std::move(a_tasks), weights, rule_, options_, rng);
    const std::vector<double> b = MergeTasks(std::move(b_tasks), weights, rule_, options_, rng);
    fused.a = ToFloat(a.data(), a.size());
    fused.b = ToFloat(b.data(), b.size());
    return fused;
  }

  LoraModuleWeights Svd(const std::vector<Part>& parts, int in, int out,
                        std::mt19937_64& rng) const {
    Matrix u;  // out x k, columns scaled by the singular values
    Matrix v;  // in x k
    if (rule_.prune == Prune::kNone && rule_.merge == Merge::kSum) {
      LowRankSvd(parts, in, out, u, v);
    } else {
      FullSvd(parts, in, out, rng, u, v);
    }
    const int kept = std::min<int>(new_rank_, static_cast<int>(u.cols()));
    Matrix b = u.leftCols(kept);
    Matrix a = v.leftCols(kept).transpose();
    if (options_.svd_clamp.has_value()) {
      std::vector<double> all(b.data(), b.data() + b.size());
      all.insert(all.end(), a.data(), a.data() + a.size());
      const double hi = Quantile(std::move(all), *options_.svd_clamp);
      // torch.clamp(x, min, max) = min(max(x, min), max), also when min > max.
      auto clamp = [hi](double x) { return std::min(std::max(x, -hi), hi); };
      b = b.unaryExpr(clamp);
      a = a.unaryExpr(clamp);
    }
    // Zero-padded up to the target rank when the module is smaller than it, so every module of an
    // svd result has the configured rank.
    LoraModuleWeights fused;
    fused.rank = new_rank_;
    fused.scaling = 1.0f;
    fused.a.assign(static_cast<size_t>(new_rank_) * in, 0.0f);
    fused.b.assign(static_cast<size_t>(out) * new_rank_, 0.0f);
    for (int j = 0; j < kept; ++j) {
      for (int i = 0; i < in; ++i)
        fused.a[static_cast<size_t>(j) * in + i] = static_cast<float>(a(j, i));
      for (int o = 0; o < out; ++o)
        fused.b[static_cast<size_t>(o) * new_rank_ + j] = static_cast<float>(b(o, j));
    }
    return fused;
  }

  // sum_i c_i B_i A_i = Bc Ac with Bc = [c_i B_i], Ac = [A_i]; QR of both leaves an R x R core.
  static void LowRankSvd(const std::vector<Part>& parts, int in, int out, Matrix& u, Matrix& v) {
    int total = 0;
    for (const Part& p : parts) total += p.weights->rank;
    Matrix bc(out, total);
    Matrix act(in, total);  // Ac transposed
    int column = 0;
    for (const Part& p : parts) {
      const int r = p.weights->rank;
      const double c = p.weight * p.weights->scaling;
      bc.middleCols(column, r) = MapF(p.weights->b, out, r).cast<double>() * c;
      act.middleCols(column, r) = MapF(p.weights->a, r, in).cast<double>().transpose();
      column += r;
    }
    const int kb = std::min(out, total);
    const int ka = std::min(in, total);
    Eigen::HouseholderQR<Matrix> qb(bc);
    Eigen::HouseholderQR<Matrix> qa(act);
    const Matrix q_b = qb.householderQ() * Matrix::Identity(out, kb);
    const Matrix q_a = qa.householderQ() * Matrix::Identity(in, ka);
    const Matrix r_b = qb.matrixQR().topRows(kb).triangularView<Eigen::Upper>();
    const Matrix r_a = qa.matrixQR().topRows(ka).triangularView<Eigen::Upper>();
    const Matrix core = r_b * r_a.transpose();  // kb x ka
    Eigen::JacobiSVD<Matrix> svd(core, Eigen::ComputeThinU | Eigen::ComputeThinV);
    u = q_b * svd.matrixU() * svd.singularValues().asDiagonal();
    v = q_a * svd.matrixV();
  }

  void FullSvd(const std::vector<Part>& parts, int in, int out, std::mt19937_64& rng, Matrix& u,
               Matrix& v) const {
    std::vector<std::vector<double>> tasks;
    std::vector<double> weights;
    for (const Part& p : parts) {
      const int r = p.weights->rank;
      const Matrix delta =
          (MapF(p.weights->b, out, r).cast<double>() * MapF(p.weights->a, r, in).cast<double>()) *
          static_cast<double>(p.weights->scaling);
      tasks.emplace_back(delta.data(), delta.data() + delta.size());
      weights.push_back(p.weight);
    }
    const std::vector<double> merged = MergeTasks(std::move(tasks), weights, rule_, options_, rng);
    const Matrix delta = Eigen::Map<const Matrix>(merged.data(), out, in);
    Eigen::BDCSVD<Matrix> svd(delta, Eigen::ComputeThinU | Eigen::ComputeThinV);
    u = svd.matrixU() * svd.singularValues().asDiagonal();
    v = svd.matrixV();
  }

  const FuseOptions& options_;
  const Rule rule_;
  const int new_rank_;
};

absl::Status CheckOptions(std::span<const FuseSource> sources, const FuseOptions& options,
                          const Rule& rule) {
  if (sources.empty()) return absl::InvalidArgumentError("sources: name at least one adapter");
  std::set<std::string> ids;
  for (size_t i = 0; i < sources.size(); ++i) {
    const FuseSource& s = sources[i];
    if (s.adapter == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("sources[", i, "]: no adapter"));
    }
    if (!std::isfinite(s.weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat("sources[", i, "].weight: must be finite, got ", s.weight));
    }
    if (s.adapter->use_dora) {
      return absl::InvalidArgumentError(
          absl::StrCat("sources[", i, "]: adapter '", s.adapter->id,
                       "' is a DoRA adapter; fusion combines LoRA deltas and would drop its "
                       "magnitude "
                       "vector (PEFT does the same), so DoRA adapters cannot be fused"));
    }
    if (s.adapter->num_layers != sources[0].adapter->num_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sources[", i, "]: adapter '", s.adapter->id, "' was parsed for a model with ",
          s.adapter->num_layers, " layers, unlike '", sources[0].adapter->id, "'"));
    }
  }
  const bool needs_density = rule.prune != Prune::kNone;
  if (needs_density) {
    if (!options.density.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("density: combination '",
                                                     FuseCombinationName(options.combination),
                                                     "' needs a density in (0, 1]"));
    }
    if (!(*options.density > 0 && *options.density <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("density: must be in (0, 1], got ", *options.density));
    }
  }
  if (options.svd_rank.has_value() && *options.svd_rank <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("svd_rank: must be positive, got ", *options.svd_rank));
  }
  if (options.svd_clamp.has_value() && !(*options.svd_clamp >= 0 && *options.svd_clamp <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("svd_clamp: must be a quantile in [0, 1], got ", *options.svd_clamp));
  }
  return absl::OkStatus();
}

// Every (layer, module) gets its own DARE stream, so which modules other sources carry never
// changes the mask of this one.
uint64_t ModuleSeed(uint64_t seed, int layer, int module) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(layer) * kNumModules +
                                               static_cast<uint64_t>(module) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

absl::StatusOr<FuseCombination> ParseFuseCombination(std::string_view name) {
  std::vector<std::string> names;
  for (const auto& [combination, spelled] : kCombinationNames) {
    if (name == spelled) return combination;
    names.emplace_back(spelled);
  }
  return absl::InvalidArgumentError(absl::StrCat("combination: unknown '", std::string(name),
                                                 "'; use one of ", absl::StrJoin(names, ", ")));
}

const char* FuseCombinationName(FuseCombination combination) {
  for (const auto& [c, spelled] : kCombinationNames) {
    if (c == combination) return spelled;
  }
  return "?";
}

absl::StatusOr<LoraAdapter> FuseAdapters(std::string_view new_id,
                                         std::span<const FuseSource> sources,
                                         const FuseOptions& requested) {
  FuseOptions options = requested;
  if (sources.size() == 1) options.combination = FuseCombination::kLinear;
  const Rule rule = RuleFor(options.combination);
  if (absl::Status s = CheckOptions(sources, options, rule); !s.ok()) return s;

  // The new adapter's r as PEFT's _check_add_weighted_adapter computes it from the configs.
  int new_rank = 0;
  std::set<int> ranks;
  for (const FuseSource& s : sources) {
    ranks.insert(s.adapter->config.r);
    new_rank = options.combination == FuseCombination::kCat
                   ? new_rank + s.adapter->config.r
                   : std::max(new_rank, s.adapter->config.r);
  }
  if (rule.svd && options.svd_rank.has_value()) new_rank = *options.svd_rank;
  if (!rule.svd && options.combination != FuseCombination::kCat) {
    if (ranks.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("sources: combination '", FuseCombinationName(options.combination),
                       "' needs adapters of one rank, got r = ", absl::StrJoin(ranks, ", "),
                       "; use cat (exact) or an *_svd combination with a target rank"));
    }
    for (const FuseSource& s : sources) {
      if (s.weight < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("sources: adapter '", s.adapter->id, "' has weight ", s.weight,
                         "; combination '", FuseCombinationName(options.combination),
                         "' scales both factors by sqrt(weight * scaling), so weights must "
                         "be >= 0 (use cat "
                         "or svd for negative weights)"));
      }
    }
  }

  const LoraAdapter& first = *sources[0].adapter;
  LoraAdapter fused;
  fused.id = std::string(new_id);
  fused.num_layers = first.num_layers;
  fused.modules.resize(static_cast<size_t>(first.num_layers));
  fused.config.r = new_rank;
  fused.config.lora_alpha = new_rank;
  fused.config.task_type = first.config.task_type;
  fused.config.base_model_name_or_path = first.config.base_model_name_or_path;

  const ModuleFuser fuser(options, new_rank);
  std::set<int> module_kinds;
  std::vector<int> layers;
  for (int layer = 0; layer < first.num_layers; ++layer) {
    bool layer_used = false;
    for (int m = 0; m < kNumModules; ++m) {
      std::vector<Part> parts;
      for (const FuseSource& s : sources) {
        const auto& slot = s.adapter->modules[layer][m];
        if (slot.has_value()) parts.push_back({&*slot, s.weight});
      }
      if (parts.empty()) continue;
      const LoraModuleWeights& w0 = *parts.front().weights;
      const int in = static_cast<int>(w0.a.size()) / w0.rank;
      const int out = static_cast<int>(w0.b.size()) / w0.rank;
      const std::string key = absl::StrCat(
          "model.layers.", layer, ".", ModuleParent(static_cast<Module>(m)), ".", kModuleNames[m]);
      for (const Part& p : parts) {
        if (p.weights->a.size() != static_cast<size_t>(p.weights->rank) * in ||
            p.weights->b.size() != static_cast<size_t>(out) * p.weights->rank) {
          return absl::InvalidArgumentError(
              absl::StrCat("module '", key,
                           "' has different shapes in the sources; were they "
                           "trained for different base models?"));
        }
      }
      std::mt19937_64 rng(ModuleSeed(options.seed, layer, m));
      absl::StatusOr<LoraModuleWeights> weights = fuser.Fuse(parts, in, out, key, rng);
      if (!weights.ok()) return weights.status();
      fused.max_rank = std::max(fused.max_rank, weights->rank);
      fused.weight_bytes += sizeof(float) * (weights->a.size() + weights->b.size());
      fused.modules[layer][m] = *std::move(weights);
      module_kinds.insert(m);
      layer_used = true;
    }
    if (layer_used) layers.push_back(layer);
  }
  for (int m : module_kinds) fused.config.target_list.emplace_back(kModuleNames[m]);
  if (static_cast<int>(layers.size()) != first.num_layers) {
    fused.config.layers_to_transform = layers;
  }
  return fused;
}

}  // namespace loraserve
