// Dropping root after the listening sockets are bound, as every MTA that
// binds port 25 does: the internet-facing process then runs as an
// unprivileged user that owns only the spool and the Maildir.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "util/result.hpp"

namespace mxgate::server {

// Gives each path (and, for directories, everything below it) to user.
Result<void> give_to_user(const std::string& user, const std::vector<std::filesystem::path>& paths);

// initgroups, setgid, setuid; verifies root cannot be regained.
Result<void> drop_privileges(const std::string& user);

}  // namespace mxgate::server
