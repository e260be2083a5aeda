// Integration harness: the real imaged binary started as a child process on a temporary socket
// and data directory, and imagectl run as a process, both through their command lines.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace imaged::testing {

struct ProcessResult {
  int code = -1;  // exit code, or 128 + signal
  std::string out, err;
};

// Runs argv to completion with extra environment variables; captures stdout and stderr.
ProcessResult runProcess(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env = {});

class Daemon {
 public:
  struct Options {
    std::string catalog;  // catalog directory
    std::string dataDir;
    std::string socket;
    std::vector<std::string> extraArgs;
    std::map<std::string, std::string> env;
  };
  explicit Daemon(Options options);
  ~Daemon();  // SIGKILL if still running
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts imaged and waits (up to 15 s) until its socket accepts connections. False (with the
  // log in `log()`) when it exits or never becomes ready.
  bool start();
  void signal(int sig);
  // Waits for the process to end; its exit code (or 128 + signal).
  int wait();
  bool running() const { return pid_ > 0; }
  std::string log() const;
  const Options& options() const { return options_; }

 private:
  Options options_;
  pid_t pid_ = -1;
  std::string logPath_;
};

// Waits until `probe` returns true, checking every 20 ms, for at most `limit`.
template <typename Probe>
bool eventually(Probe&& probe, std::chrono::milliseconds limit = std::chrono::seconds(20));

}  // namespace imaged::testing

#include "tests/integration/harness_inl.h"
