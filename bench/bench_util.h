// A small harness for imaged's benchmarks: every figure is printed as one JSON line with the
// baseline that was measured in the same run, process and data directory.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace imaged::bench {

inline void report(const std::string& bench, const std::string& unit, double value,
                   const std::string& baseline, double baselineValue,
                   const std::string& extra = "") {
  std::printf(
      "{\"bench\": \"%s\", \"unit\": \"%s\", \"value\": %.6g, \"baseline\": \"%s\", "
      "\"baseline_value\": %.6g, \"ratio\": %.4f%s%s}\n",
      bench.c_str(), unit.c_str(), value, baseline.c_str(), baselineValue,
      baselineValue > 0 ? value / baselineValue : 0.0, extra.empty() ? "" : ", ", extra.c_str());
  std::fflush(stdout);
}

// The middle value (the upper one of an even count); `v` must not be empty.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace imaged::bench
