// One log line to stderr, written with a single write(2) so lines from the
// network thread and the delivery thread never interleave.
#pragma once

#include <string_view>

namespace mxgate {

void log_line(std::string_view line);

}  // namespace mxgate
