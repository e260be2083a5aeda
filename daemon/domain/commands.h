// Commands: a caller's request, checked against the projection and the catalog, becomes the
// events to append (or an error, and nothing is appended). Pure: no I/O; the caller appends the
// plan with the store and applies the committed events to the projection.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/catalog/catalog.h"
#include "daemon/domain/projection.h"
#include "store/event_log.h"

namespace imaged::domain {

struct Caller {
  std::string tenant;
  uint32_t uid = 0;
  std::string client;
};

struct CreateRequest {
  std::string name, description, starter;
  std::vector<std::string> packages;
  std::vector<EnvVar> env;
};

struct EditRequest {
  std::vector<std::string> addPackages, removePackages;
  std::vector<EnvVar> setEnv;
  std::vector<std::string> unsetEnv;
  std::optional<std::string> description;
  std::optional<std::string> starter;  // present only to be refused (E_IMMUTABLE_FIELD)
  std::optional<std::string> name;     // likewise
};

// Checks a spec against the catalog as create and preview do: starter (E_STARTER_NOT_FOUND),
// name (E_INVALID_NAME), env (E_ENV_*), packages (E_PACKAGE_NOT_FOUND, E_INVALID_ARGUMENT).
Result<std::vector<catalog::Atom>> validateSpec(const catalog::Catalog& catalog,
                                                const CreateRequest& spec, bool checkName);

// The idempotency key as stored: scoped to the tenant.
std::string scopedKey(const Caller& caller, const std::string& idempotencyKey);

// Create: ImageCreated + BuildRequested on a new stream. E_NAME_TAKEN when the tenant has a live
// image of that name. (A retry whose key already created an image is the caller's to answer
// with that image: see Projection::byIdempotencyKey.)
Result<store::AppendRequest> planCreate(const Projection& projection,
                                        const catalog::Catalog& catalog, const Caller& caller,
                                        const CreateRequest& request,
                                        const std::string& idempotencyKey);

// Edit: [BuildCancelled] + ImageEdited + BuildRequested. E_NOT_FOUND, E_IMMUTABLE_FIELD,
// E_VERSION_CONFLICT (expectedVersion 0: any), and the spec checks.
Result<store::AppendRequest> planEdit(const Projection& projection, const catalog::Catalog& catalog,
                                      const Caller& caller, const std::string& name,
                                      const EditRequest& edit, uint64_t expectedVersion);

// Rebuild: [BuildCancelled] + BuildRequested(reason).
Result<store::AppendRequest> planRebuild(const Projection& projection,
                                         const catalog::Catalog& catalog, const Caller& caller,
                                         const ImageState& image, schema::BuildReason reason,
                                         uint64_t expectedVersion);

// Delete: [BuildCancelled] + ImageDeleted.
Result<store::AppendRequest> planDelete(const Projection& projection, const Caller& caller,
                                        const std::string& name, uint64_t expectedVersion);

// The tenant's live image, or E_NOT_FOUND (also for other tenants' images).
Result<const ImageState*> findImage(const Projection& projection, const Caller& caller,
                                    const std::string& name);
// The image whose history `name` asks for: the live one, else the last one of that name that
// was deleted (its events stay in the log). E_NOT_FOUND when the tenant never had one.
Result<const ImageState*> findImageOrDeleted(const Projection& projection, const Caller& caller,
                                             const std::string& name);

}  // namespace imaged::domain
