// The catalog: starter images and the apk repositories they are made from, loaded from a
// directory in the format of CATALOG.md, immutable once built, and shared between threads as a
// `std::shared_ptr<const Catalog>`.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "daemon/catalog/apkindex.h"
#include "daemon/catalog/atom.h"
#include "daemon/catalog/starter.h"

namespace imaged::catalog {

using PackageId = uint32_t;

// One repository: `repositories/<name>/<arch>/` and the records of its index.
struct Repository {
  std::string name;
  std::string path;  // the <arch> directory holding the index and the .apk files
  std::vector<PackageRecord> records;
  // Whether the repository ships package files at all. CATALOG.md: they are needed to write
  // image contents, not to resolve; a repository of index only yields resolved lines without
  // images, while one that ships files must ship every file a line needs.
  bool hasPackageFiles = false;
};

struct SearchHit {
  std::string name;
  std::string version;  // the newest version
  std::string description;
  std::vector<std::string> versions;  // every version, newest first
  int rank = 0;  // 0 exact name, 1 name prefix, 2 name substring, 3 version, 4 description
};

class Catalog {
 public:
  struct Options {
    std::string arch = "x86_64";  // which <arch> folder of each repository is read
  };

  // Reads DIR/starters/*.yaml|*.yml|*.json and DIR/repositories/*/<arch>/APKINDEX[.tar.gz].
  // Fails (E_CATALOG_INVALID) only when the directory itself is unusable: missing, no starters/
  // or repositories/ folder. Everything else that is wrong is reported in problems() and left
  // out: a malformed record, a starter file that does not parse, a starter pinning a package
  // that no repository has.
  static Result<std::shared_ptr<const Catalog>> load(const std::string& dir,
                                                     const Options& options);
  static Result<std::shared_ptr<const Catalog>> load(const std::string& dir) {
    return load(dir, Options{});
  }

  // Builds a catalog from parts (for tests and tools); the same checks as load().
  static std::shared_ptr<const Catalog> build(std::vector<Repository> repositories,
                                              std::vector<Starter> starters,
                                              std::vector<CatalogProblem> problems = {});

  // Starters that are offered, sorted by name.
  const std::vector<Starter>& starters() const { return starters_; }
  const Starter* findStarter(std::string_view name) const;
  const std::vector<CatalogProblem>& problems() const { return problems_; }
  const std::vector<Repository>& repositories() const { return repositories_; }

  // "sha256:<hex>" of the normalized content: offered starters and accepted records, independent
  // of file order, field order, YAML-or-JSON and whitespace.
  const std::string& digest() const { return digest_; }

  size_t packageCount() const { return packages_.size(); }
  const PackageRecord& package(PackageId id) const { return *packages_[id].record; }
  uint32_t repositoryOf(PackageId id) const { return packages_[id].repository; }
  // "name-version" for messages.
  std::string label(PackageId id) const;

  // Records named `name`, newest first.
  std::span<const PackageId> named(std::string_view name) const;
  // True when some record is named `name` or provides it.
  bool knows(std::string_view name) const;

  // The records that satisfy `atom` (its `conflict` flag is ignored): those named atom.name whose
  // version satisfies it, and those providing atom.name (an unversioned provide satisfies only
  // an atom without a version). In the resolver's order of preference: records of that very
  // name first, then the higher (provided) version, the higher provider priority, the higher
  // record version, the fewer dependencies, then name and repository order.
  std::vector<PackageId> candidates(const Atom& atom) const;

  // The names of the provides of `id` that carry a version, plus its own name: at most one
  // installed package may take each of them.
  std::vector<std::string_view> slots(PackageId id) const;
  // Every record that takes the slot `name`: records so named and versioned providers of it.
  std::span<const PackageId> slotMembers(std::string_view name) const;

  // Packages by name, description or version; one hit per name, best first (exact name, name
  // prefix, name substring, version, description words), then by name; at most `limit`.
  std::vector<SearchHit> search(std::string_view query, size_t limit) const;

 private:
  struct Entry {
    const PackageRecord* record;
    uint32_t repository;
  };
  struct ProvideRef {
    PackageId id;
    uint32_t provide;  // index into the record's provides
  };
  struct NameInfo {
    std::vector<PackageId> records;  // newest first
    std::string lowerName;
    std::string lowerDescription;  // of the newest record
  };

  Catalog() = default;
  void index();
  void checkStarters();
  void computeDigest();

  std::vector<Repository> repositories_;
  std::vector<Starter> starters_;
  std::vector<CatalogProblem> problems_;
  std::vector<Entry> packages_;
  std::unordered_map<std::string_view, NameInfo> byName_;
  std::unordered_map<std::string_view, std::vector<ProvideRef>> byProvide_;
  std::unordered_map<std::string_view, std::vector<PackageId>> slotMembers_;
  std::vector<std::string_view> sortedNames_;  // for search, in name order
  std::string digest_;
};

}  // namespace imaged::catalog
