// The image of one built line: the files of every installed package in one layer, with the
// apk database (lib/apk/db/installed, etc/apk/world) so that scanners recognise the packages;
// the config (env, entrypoint, cmd, user, working dir, the io.imaged.* labels, created from the
// starter version's publication); the manifest. Everything goes to the blob store; the
// manifest's descriptor comes back.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/catalog/catalog.h"
#include "daemon/image/oci.h"

namespace imaged::image {
inline constexpr char kSpdxMediaType[] = "application/spdx+json";
}

namespace imaged::image {

struct LineImageInput {
  std::shared_ptr<const catalog::Catalog> catalog;
  std::vector<catalog::PackageId> packages;  // the resolved set
  std::string tenant, starter, line, version;
  std::string published;  // RFC 3339: the config's `created` and every file's time
  std::vector<std::pair<std::string, std::string>> env;  // the starter's for the line, then custom
  std::vector<std::string> entrypoint, cmd;
  std::string user, workdir;
  std::vector<std::string> world;  // what was asked for: pins and added packages
};

struct LineImage {
  Descriptor manifest;
  Descriptor sbom;  // SPDX 2.3 JSON of the installed packages
};

// Reads and verifies each package's .apk from its repository (E_PACKAGE_MISSING,
// E_PACKAGE_CORRUPT naming the file) and writes the image and its SBOM. Same inputs, same
// digests.
Result<LineImage> writeLineImage(const LineImageInput& input, BlobStore& blobs);

// The SPDX 2.3 document of a line: every package with its version, license and pkg:apk purl,
// what each depends on, and what the image contains.
std::string spdxSbom(const LineImageInput& input);

// The apk database text for `packages`, as apk writes lib/apk/db/installed.
std::string installedDatabase(
    const catalog::Catalog& catalog,
    const std::vector<std::pair<catalog::PackageId, const ApkFile*>>& packages);

}  // namespace imaged::image
