// apk package versions: validation, ordering and the fuzzy `~` match, exactly as apk-tools
// orders them (src/version.c of apk-tools 2.14/3), so that "newest" means what it means to apk.
//
//   version   := digits { "." digits } [ letter [ digits ] ] { "_" suffix [ digits ] } [ "~" hex ]
//                [ "-r" digits ]
// (digits after the letter, as in Alpine's `0.99f7-r0`, are accepted as apk 2.x accepts them)
//   suffix    := alpha < beta < pre < rc < (none) < cvs < svn < git < hg < p
//
// Numbers compare numerically, except a dotted part with a leading zero on either side, which
// compares as a string ("1.01" < "1.1", "1.001" < "1.01"). When one version runs out first, the
// longer one is newer unless what follows is a pre-release suffix (`1.0_rc1` < `1.0` < `1.0.1`).
// An invalid tail sorts as if the parse had stopped there; validate versions before trusting an
// order between them.
#pragma once

#include <string_view>

namespace imaged::catalog {

// True when `v` is a whole, valid apk version.
bool isValidVersion(std::string_view v);

// <0, 0 or >0 as a is older than, the same as, or newer than b.
int compareVersions(std::string_view a, std::string_view b);

// The `~` match: `version` starts with `prefix` token by token ("1.2.3" ~ "1.2" but not
// "1.20" ~ "1.2").
bool fuzzyMatch(std::string_view version, std::string_view prefix);

}  // namespace imaged::catalog
