#include "daemon/domain/commands.h"

#include <algorithm>

#include "daemon/domain/events.h"
#include "daemon/domain/validate.h"

namespace imaged::domain {
namespace {

store::AppendRequest request(const Caller& caller, std::string streamId,
                             store::ExpectedVersion expected) {
  store::AppendRequest r;
  r.streamId = std::move(streamId);
  r.expected = expected;
  r.actor = {caller.tenant, caller.uid, caller.client};
  return r;
}

Status checkVersion(const ImageState& image, uint64_t expectedVersion) {
  if (expectedVersion != 0 && image.version != expectedVersion) {
    return Error{"E_VERSION_CONFLICT",
                 image.name + " is at version " + std::to_string(image.version) + ", not " +
                     std::to_string(expectedVersion) + "; read it again and retry"};
  }
  return Ok{};
}

store::ExpectedVersion expected(const ImageState& image, uint64_t expectedVersion) {
  // The store is the final judge: the image's version when this plan was made.
  return store::ExpectedVersion::exactly(expectedVersion != 0 ? expectedVersion : image.version);
}

// Cancels the image's running build, if any, as the first event of a plan.
void cancelRunning(const ImageState& image, const std::string& why, store::AppendRequest& r) {
  const BuildState* b = image.latestBuild();
  if (b && b->status == BuildStatus::kInProgress) {
    r.payloads.push_back(events::buildCancelled(b->id, 0, why));
  }
}

}  // namespace

Result<std::vector<catalog::Atom>> validateSpec(const catalog::Catalog& catalog,
                                                const CreateRequest& spec, bool checkName) {
  if (checkName) {
    if (auto s = validateName(spec.name); !s.ok()) return s.error();
  }
  const catalog::Starter* starter = catalog.findStarter(spec.starter);
  if (!starter)
    return Error{"E_STARTER_NOT_FOUND", "no starter image named '" + spec.starter + "'"};
  if (auto s = validateDescription(spec.description); !s.ok()) return s.error();
  if (auto s = validateEnv(spec.env, *starter); !s.ok()) return s.error();
  return validatePackages(spec.packages, catalog);
}

std::string scopedKey(const Caller& caller, const std::string& idempotencyKey) {
  return idempotencyKey.empty() ? "" : "create/" + caller.tenant + "/" + idempotencyKey;
}

Result<const ImageState*> findImage(const Projection& projection, const Caller& caller,
                                    const std::string& name) {
  const ImageState* image = projection.find(caller.tenant, name);
  if (!image) return Error{"E_NOT_FOUND", "no image named " + caller.tenant + "/" + name};
  return image;
}

Result<const ImageState*> findImageOrDeleted(const Projection& projection, const Caller& caller,
                                             const std::string& name) {
  if (const ImageState* live = projection.find(caller.tenant, name)) return live;
  if (const ImageState* last = projection.lastOfName(caller.tenant, name)) return last;
  return Error{"E_NOT_FOUND", "no image named " + caller.tenant + "/" + name};
}

Result<store::AppendRequest> planCreate(const Projection& projection,
                                        const catalog::Catalog& catalog, const Caller& caller,
                                        const CreateRequest& req,
                                        const std::string& idempotencyKey) {
  if (auto atoms = validateSpec(catalog, req, true); !atoms.ok()) return atoms.error();
  if (projection.find(caller.tenant, req.name)) {
    return Error{"E_NAME_TAKEN", caller.tenant + "/" + req.name + " already exists"};
  }
  auto r = request(caller, projection.nextStreamId(caller.tenant, req.name),
                   store::ExpectedVersion::noStream());
  r.idempotencyKey = scopedKey(caller, idempotencyKey);
  r.payloads.push_back(events::imageCreated(caller.tenant, req.name, req.description, req.starter,
                                            req.packages, req.env));
  r.payloads.push_back(events::buildRequested(schema::BuildReason::CREATED, catalog.digest()));
  return r;
}

Result<store::AppendRequest> planEdit(const Projection& projection, const catalog::Catalog& catalog,
                                      const Caller& caller, const std::string& name,
                                      const EditRequest& edit, uint64_t expectedVersion) {
  auto found = findImage(projection, caller, name);
  if (!found.ok()) return found.error();
  const ImageState& image = **found;
  if (edit.starter && *edit.starter != image.starter) {
    return Error{"E_IMMUTABLE_FIELD",
                 "the starter of an image cannot change (it is " + image.starter.str() + ")"};
  }
  if (edit.name && *edit.name != image.name) {
    return Error{"E_IMMUTABLE_FIELD", "the name of an image cannot change"};
  }
  if (auto s = checkVersion(image, expectedVersion); !s.ok()) return s.error();

  CreateRequest next{image.name, edit.description.value_or(image.description), image.starter.str(),
                     image.packages, image.env};
  for (const std::string& remove : edit.removePackages) {
    auto it = std::find(next.packages.begin(), next.packages.end(), remove);
    if (it == next.packages.end()) {
      return Error{"E_INVALID_ARGUMENT", name + " has no added package " + remove};
    }
    next.packages.erase(it);
  }
  for (const std::string& add : edit.addPackages) next.packages.push_back(add);
  for (const std::string& key : edit.unsetEnv) {
    auto it = std::find_if(next.env.begin(), next.env.end(),
                           [&](const EnvVar& e) { return e.key == key; });
    if (it == next.env.end()) return Error{"E_INVALID_ARGUMENT", name + " has no env " + key};
    next.env.erase(it);
  }
  for (const EnvVar& set : edit.setEnv) {
    auto it = std::find_if(next.env.begin(), next.env.end(),
                           [&](const EnvVar& e) { return e.key == set.key; });
    if (it != next.env.end() &&
        std::count_if(edit.setEnv.begin(), edit.setEnv.end(),
                      [&](const EnvVar& e) { return e.key == set.key; }) == 1) {
      it->value = set.value;  // replacing an existing key is an edit, not a duplicate
    } else {
      next.env.push_back(set);
    }
  }
  if (auto atoms = validateSpec(catalog, next, false); !atoms.ok()) return atoms.error();

  auto r = request(caller, image.streamId, expected(image, expectedVersion));
  cancelRunning(image, "superseded by an edit", r);
  r.payloads.push_back(events::imageEdited(next.description, next.packages, next.env));
  r.payloads.push_back(events::buildRequested(schema::BuildReason::EDITED, catalog.digest()));
  return r;
}

Result<store::AppendRequest> planRebuild(const Projection&, const catalog::Catalog& catalog,
                                         const Caller& caller, const ImageState& image,
                                         schema::BuildReason reason, uint64_t expectedVersion) {
  if (auto s = checkVersion(image, expectedVersion); !s.ok()) return s.error();
  auto r = request(caller, image.streamId, expected(image, expectedVersion));
  cancelRunning(image, "superseded by a new build", r);
  r.payloads.push_back(events::buildRequested(reason, catalog.digest()));
  return r;
}

Result<store::AppendRequest> planDelete(const Projection& projection, const Caller& caller,
                                        const std::string& name, uint64_t expectedVersion) {
  auto found = findImage(projection, caller, name);
  if (!found.ok()) return found.error();
  const ImageState& image = **found;
  if (auto s = checkVersion(image, expectedVersion); !s.ok()) return s.error();
  auto r = request(caller, image.streamId, expected(image, expectedVersion));
  cancelRunning(image, "the image was deleted", r);
  r.payloads.push_back(events::imageDeleted("deleted by " + caller.tenant));
  return r;
}

}  // namespace imaged::domain
