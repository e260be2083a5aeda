// Validation of what a caller asks for (PRODUCT.md lifecycle steps 2-4): env vars, image names,
// added packages. Each failure has its stable code; nothing is recorded for a rejected request.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "daemon/catalog/catalog.h"

namespace imaged::domain {

using catalog::EnvVar;

inline constexpr size_t kMaxNameBytes = 128;
inline constexpr size_t kMaxDescriptionBytes = 4096;
inline constexpr size_t kMaxPackages = 256;
inline constexpr size_t kMaxEnvVars = 256;
inline constexpr size_t kMaxEnvValueBytes = 4096;

// OCI repository-name rules for the part after "<tenant>/": one or more components separated by
// "/", each [a-z0-9]+ joined by ".", "_", "__" or runs of "-"; at most 128 bytes.
// E_INVALID_NAME otherwise.
Status validateName(std::string_view name);

// A tenant id: [a-z0-9][a-z0-9_-]*, at most 64 bytes (E_INVALID_ARGUMENT).
Status validateTenant(std::string_view tenant);

// Custom env vars, in the caller's order: E_ENV_INVALID_KEY, E_ENV_EMPTY_VALUE,
// E_ENV_DUPLICATE_KEY, E_ENV_RESERVED_KEY (a key the starter or one of its lines sets).
Status validateEnv(const std::vector<EnvVar>& env, const catalog::Starter& starter);

// Added packages: each a valid atom (E_INVALID_ARGUMENT), not given twice, and known to some
// repository by name or provides (E_PACKAGE_NOT_FOUND).
Result<std::vector<catalog::Atom>> validatePackages(const std::vector<std::string>& packages,
                                                    const catalog::Catalog& catalog);

Status validateDescription(std::string_view description);

}  // namespace imaged::domain
