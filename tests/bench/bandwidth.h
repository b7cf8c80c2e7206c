// STREAM-like copy bandwidth of this machine, measured inside each benchmark binary so that
// kernel timings can be reported as a fraction of what the memory system delivers right now.
#pragma once

namespace loraserve::bench {

// Bytes read + written per second (GB/s, 1e9) for a multithreaded copy of a buffer far larger
// than the last-level cache. Best of several repetitions; measured once, then cached.
double MeasureCopyBandwidthGBs();

}  // namespace loraserve::bench
