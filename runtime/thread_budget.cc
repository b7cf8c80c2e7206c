#include "runtime/thread_budget.h"

#include <omp.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

namespace loraserve {

absl::StatusOr<CpuSample> ReadCpuSample() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    return absl::InternalError("sched_getaffinity failed");
  }
  std::ifstream stat("/proc/stat");
  if (!stat) return absl::UnavailableError("/proc/stat is not readable");
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  CpuSample sample;
  std::string line;
  while (std::getline(stat, line)) {
    // Per-CPU lines only ("cpu0 ..."), not the "cpu " total.
    if (line.size() < 4 || line.compare(0, 3, "cpu") != 0 || line[3] == ' ') continue;
    std::istringstream fields(line.substr(3));
    int cpu = -1;
    double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    fields >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
    if (!fields && !fields.eof()) continue;
    if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed)) continue;
    const double busy = user + nice + system + irq + softirq + steal;
    sample.busy_s += busy / tick;
    sample.total_s += (busy + idle + iowait) / tick;
    ++sample.cpus;
  }
  if (sample.cpus == 0) return absl::UnavailableError("/proc/stat lists none of our CPUs");
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return absl::InternalError("getrusage failed");
  sample.own_s = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6 + usage.ru_stime.tv_sec +
                 usage.ru_stime.tv_usec * 1e-6;
  return sample;
}

double OtherProcessesCores(const CpuSample& before, const CpuSample& after) {
  const int cpus = std::max(1, after.cpus);
  const double wall = (after.total_s - before.total_s) / cpus;
  if (wall <= 0) return 0;
  const double others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s);
  return std::clamp(others / wall, 0.0, static_cast<double>(cpus));
}

int ThreadsForFreeCores(double free_cores, int current, int max_threads) {
  const int up = static_cast<int>(std::floor(free_cores + 0.4));
  const int down = static_cast<int>(std::floor(free_cores + 0.6));
  int threads = current;
  if (up > current) threads = up;
  if (down < current) threads = down;
  return std::clamp(threads, 1, std::max(1, max_threads));
}

ThreadBudget::ThreadBudget(int max_threads, Sampler sampler, Clock::duration interval)
    : max_threads_(std::max(1, max_threads)),
      sampler_(std::move(sampler)),
      interval_(interval),
      threads_(max_threads_) {}

int ThreadBudget::Update(Clock::time_point now) {
  if (have_sample_ && now - last_time_ < interval_) return threads_;
  auto sample = sampler_();
  if (!sample.ok()) return threads_;  // no /proc: keep the team as it is
  if (have_sample_) {
    const double free_cores =
        std::min<double>(max_threads_, sample->cpus - OtherProcessesCores(last_, *sample));
    const int threads = ThreadsForFreeCores(free_cores, threads_, max_threads_);
    if (threads != threads_) {
      threads_ = threads;
      omp_set_num_threads(threads_);
    }
  }
  last_ = *sample;
  last_time_ = now;
  have_sample_ = true;
  return threads_;
}

}  // namespace loraserve
