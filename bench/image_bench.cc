// image.write: writing one line's image from packages totalling 50 MB of files, against
// `tar -c | gzip -6` of the same files into the same disk, in the same run. Also reports the
// writer's peak memory. Usage: image_bench CATALOG_DIR SCRATCH
#include <sys/resource.h>

#include <cstdlib>
#include <filesystem>

#include "bench_util.h"
#include "daemon/catalog/resolver.h"
#include "daemon/image/line_image.h"

using imaged::bench::report;
using imaged::bench::Stopwatch;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: image_bench CATALOG_DIR SCRATCH\n");
    return 2;
  }
  const std::string catalogDir = argv[1], scratch = argv[2];
  fs::remove_all(scratch);
  fs::create_directories(scratch);
  auto catalog = *imaged::catalog::Catalog::load(catalogDir);
  const auto& starter = *catalog->findStarter("big");
  const auto& line = starter.lines[0];
  auto resolved =
      imaged::catalog::resolveLine(*catalog, {line.line, line.production().packages, {}});
  if (!resolved.ok()) return 1;
  imaged::image::LineImageInput in;
  in.catalog = catalog;
  in.packages = resolved.packages;
  in.tenant = "bench";
  in.starter = "big";
  in.line = line.line;
  in.version = line.production().version;
  in.published = line.production().published;

  // Ours, into a fresh blob store.
  imaged::image::BlobStore blobs(scratch + "/blobs");
  Stopwatch sw;
  auto image = imaged::image::writeLineImage(in, blobs);
  const double ours = sw.seconds();
  if (!image.ok()) {
    std::fprintf(stderr, "%s\n", image.error().message.c_str());
    return 1;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);

  // The baseline: the same files, unpacked, through tar and gzip -6 onto the same disk.
  const std::string files = scratch + "/files";
  fs::create_directories(files);
  uint64_t bytes = 0;
  for (const auto& p : line.production().packages) {
    const std::string apk =
        catalog->repositories()[0].path + "/" + p.name + "-" + p.version + ".apk";
    std::system(("tar -xzf " + apk + " -C " + files + " 2>/dev/null").c_str());
  }
  fs::remove(files + "/.PKGINFO");
  for (const auto& e : fs::recursive_directory_iterator(files)) {
    if (e.is_regular_file()) bytes += e.file_size();
  }
  Stopwatch base;
  std::system(("tar -C " + files + " -cf - . | gzip -6 > " + scratch + "/baseline.tar.gz").c_str());
  const double baseline = base.seconds();
  report("image.write", "s", ours, "tar|gzip-6", baseline,
         "\"speed_ratio\": " + std::to_string(baseline / ours) + ", \"file_bytes\": " +
             std::to_string(bytes) + ", \"peak_rss_kib\": " + std::to_string(usage.ru_maxrss) +
             ", \"target_speed_ratio\": 1.0");
  fs::remove_all(scratch);
  return 0;
}
