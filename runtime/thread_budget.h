// How many OpenMP threads the step loop's forward passes use. Spinning threads make a quiet
// machine fast (no futex wake per parallel region) but collapse when another process holds a
// core: the team waits at every barrier for a thread the OS has descheduled. So the step loop
// follows the cores that other processes leave free: every interval it reads the busy time of
// the CPUs this process may run on (/proc/stat) less its own CPU time (getrusage), and sets
// the team size to the free cores, with hysteresis. On a quiet machine that is every core; with
// one of two cores taken it is one thread, which needs no barrier at all.
#pragma once

#include <chrono>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"

namespace loraserve {

// CPU seconds since boot, summed over a set of CPUs, and this process's own CPU seconds.
struct CpuSample {
  double busy_s = 0;   // user + nice + system + irq + softirq + steal
  double total_s = 0;  // busy + idle + iowait
  double own_s = 0;    // this process, all threads (user + system)
  int cpus = 0;        // how many CPUs the sums cover
};

// The sample over the CPUs this process may run on (its affinity mask).
absl::StatusOr<CpuSample> ReadCpuSample();

// Cores other processes kept busy between two samples (0 when the interval is empty).
double OtherProcessesCores(const CpuSample& before, const CpuSample& after);

// The team size for `free_cores` given the current one: the free cores rounded, moving up only
// once 0.6 of the next core is free and down only once less than 0.4 of the current one is,
// so a neighbour hovering near a whole core does not flip the team every interval.
int ThreadsForFreeCores(double free_cores, int current, int max_threads);

class ThreadBudget {
 public:
  using Clock = std::chrono::steady_clock;
  using Sampler = std::function<absl::StatusOr<CpuSample>()>;

  // max_threads: the team size on a quiet machine (omp_get_max_threads() at start).
  explicit ThreadBudget(int max_threads, Sampler sampler = ReadCpuSample,
                        Clock::duration interval = std::chrono::milliseconds(500));

  // Called by the step loop before each forward pass; re-samples once per interval and sets the
  // calling thread's OpenMP team size (omp_set_num_threads). Returns the team size.
  int Update(Clock::time_point now);
  int threads() const { return threads_; }

 private:
  int max_threads_;
  Sampler sampler_;
  Clock::duration interval_;
  int threads_;
  bool have_sample_ = false;
  CpuSample last_;
  Clock::time_point last_time_;
};

}  // namespace loraserve
