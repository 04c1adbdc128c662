// The Resolver's options from the configuration's [dns] table, shared by the
// delivery scheduler and `mxgate probe`.
#pragma once

#include "config/config.hpp"
#include "dns/resolver.hpp"

namespace mxgate::dns {

// Trust anchor files that do not exist are left out with a log line (only
// the built-in default can be missing: configured files are checked by the
// parser); without one no zone validates, so DANE levels fall back as for
// insecure zones.
ResolverOptions resolver_options(const config::Config& config);

}  // namespace mxgate::dns
