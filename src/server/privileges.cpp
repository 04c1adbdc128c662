#include "server/privileges.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mxgate::server {
namespace {

struct Account {
  uid_t uid;
  gid_t gid;
};

Result<Account> lookup(const std::string& user) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  const int rc = getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0) return make_error("user: " + user + ": " + std::strerror(rc));
  if (found == nullptr) return make_error("user: " + user + ": no such user");
  return Account{pw.pw_uid, pw.pw_gid};
}

}  // namespace

Result<void> give_to_user(const std::string& user, const std::vector<std::filesystem::path>& paths) {
  auto account = lookup(user);
  if (!account) return make_error(account.error());
  for (const auto& path : paths) {
    std::error_code ec;
    auto chown_one = [&](const std::filesystem::path& p) -> Result<void> {
      if (::lchown(p.c_str(), account->uid, account->gid) != 0)
        return make_error(p.string() + ": chown: " + std::strerror(errno));
      return {};
    };
    if (auto r = chown_one(path); !r) return r;
    if (!std::filesystem::is_directory(path, ec)) continue;
    for (auto it = std::filesystem::recursive_directory_iterator(path, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (auto r = chown_one(it->path()); !r) return r;
    }
    if (ec) return make_error(path.string() + ": " + ec.message());
  }
  return {};
}

Result<void> drop_privileges(const std::string& user) {
  auto account = lookup(user);
  if (!account) return make_error(account.error());
  if (::initgroups(user.c_str(), account->gid) != 0)
    return make_error("user: initgroups: " + std::string(std::strerror(errno)));
  if (::setgid(account->gid) != 0) return make_error("user: setgid: " + std::string(std::strerror(errno)));
  if (::setuid(account->uid) != 0) return make_error("user: setuid: " + std::string(std::strerror(errno)));
  if (account->uid != 0 && ::setuid(0) == 0) return make_error("user: root could be regained after setuid");
  return {};
}

}  // namespace mxgate::server
