// Benchmarks of imaged-audit, the real program as a child process, over a log of 1 M events
// (100,000 images; --quick: 10,000) as the daemon would have written it.
// Usage: audit_bench AUDIT_BIN CATALOG_DIR SCRATCH [--quick]
//
// audit.verify   events/s of `imaged-audit verify`, against a raw LMDB cursor scan that computes
//                the same SHA-256 chain (previous hash ‖ record bytes) in this process, same run.
// audit.replay   events/s of `imaged-audit replay` (the whole projection), against a raw cursor
//                scan touching every record.
#include <lmdb.h>
#include <openssl/evp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_lmdb.h"
#include "bench_log.h"
#include "bench_util.h"

using imaged::bench::report;
using imaged::bench::Stopwatch;
namespace fs = std::filesystem;

namespace {

// Runs the program with stdout to /dev/null; returns the seconds it took. Throws unless it
// exits 0.
double timeRun(const std::vector<std::string>& argv) {
  Stopwatch sw;
  const pid_t pid = fork();
  if (pid == 0) {
    if (!freopen("/dev/null", "w", stdout)) _exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error(argv[0] + " " + argv[1] + " failed");
  }
  return sw.seconds();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: audit_bench AUDIT_BIN CATALOG_DIR SCRATCH [--quick]\n");
    return 2;
  }
  const std::string bin = argv[1], catalog = argv[2], scratch = argv[3];
  const bool quick = argc > 4 && std::string(argv[4]) == "--quick";
  const int images = quick ? 10'000 : 100'000;
  fs::remove_all(scratch);
  fs::create_directories(scratch);
  try {
    const std::string data = scratch + "/data";
    imaged::bench::writeLog(data, catalog, images);

    const double verifySeconds = timeRun({bin, "verify", data});
    uint64_t events = 0;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    // Fetched once, as store/ does: an implicit fetch in every EVP_DigestInit_ex costs more
    // than hashing a small record.
    EVP_MD* sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    uint8_t hash[32] = {};
    const double chained =
        imaged::bench::rawScan(data + "/log", &events, [&](const uint8_t* p, size_t n) {
          unsigned int len = 0;
          EVP_DigestInit_ex(ctx, sha256, nullptr);
          EVP_DigestUpdate(ctx, hash, sizeof hash);
          EVP_DigestUpdate(ctx, p, n);
          EVP_DigestFinal_ex(ctx, hash, &len);
        });
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(sha256);
    report("audit.verify", "events/s", events / verifySeconds, "lmdb.cursor.scan+sha256", chained,
           "\"events\": " + std::to_string(events));

    const double replaySeconds = timeRun({bin, "replay", data});
    uint64_t touched = 0;
    const double scan = imaged::bench::rawScan(
        data + "/log", &events, [&](const uint8_t* p, size_t n) { touched += p[n - 1] + n; });
    report("audit.replay", "events/s", events / replaySeconds, "lmdb.cursor.scan", scan,
           "\"events\": " + std::to_string(events) + ", \"images\": " + std::to_string(images) +
               (touched == 0 ? ", \"empty\": true" : ""));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "audit_bench: %s\n", e.what());
    return 1;
  }
  fs::remove_all(scratch);
  return 0;
}
