// See delivery_state.hpp for the file format and the durability rules.
#include "queue/delivery_state.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <system_error>
#include <utility>

#include "util/unique_fd.hpp"

namespace mxgate::queue {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kFirstLine = "MXGATE-STATE 1";
constexpr std::string_view kFormatName = "MXGATE-STATE ";
constexpr std::string_view kTmpPrefix = ".tmp-";
constexpr std::size_t kMaxIdLength = 64;

Error errno_error(std::string_view step, const fs::path& path, int err) {
  return make_error("state: " + std::string(step) + " " + path.string() + ": " + errno_text(err));
}

Error corrupt(std::string_view id, std::string_view what) {
  return make_error("state: " + std::string(id) + ": corrupt: " + std::string(what));
}

// mkdir(2) with mode 0700, accepting an existing directory.
int make_directory(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) return 0;
  if (errno != EEXIST) return errno;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return errno;
  return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

std::string one_line(std::string_view text) {
  std::string out(text);
  std::replace_if(
      out.begin(), out.end(), [](char c) { return c == '\r' || c == '\n'; }, ' ');
  return out;
}

bool has_line_break(std::string_view value) { return value.find_first_of("\r\n") != std::string_view::npos; }

template <class Int>
bool parse_int(std::string_view text, Int& out) {
  if (text.empty() || text.front() == '+') return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::optional<RecipientState::Status> parse_status(std::string_view name) {
  using S = RecipientState::Status;
  for (S s : {S::pending, S::delivered, S::failed}) {
    if (status_name(s) == name) return s;
  }
  return std::nullopt;
}

// The whole file, or nullopt when it does not exist.
Result<std::optional<std::string>> read_whole(const fs::path& path) {
  std::string bytes;
  if (const int err = read_file(path, bytes); err != 0) {
    if (err == ENOENT) return std::optional<std::string>();
    return errno_error("read", path, err);
  }
  return std::optional<std::string>(std::move(bytes));
}

// tmp -> write -> fsync -> close -> rename over dest -> fsync dir.  Unlike
// write_durably() the rename replaces dest.  Before the rename a failure
// leaves nothing behind; after it, dest holds the new content and only its
// durability is in doubt, so nothing is removed (removing it would lose the
// old state as well).
Result<void> replace_durably(const fs::path& tmp, const fs::path& dest, std::string_view data) {
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_error("create", tmp, errno);
  int err = 0;
  // Run as root (`mxgate queue flush` by an administrator), keep the owner
  // of the file being replaced, or the gateway, running as its own user,
  // could no longer read its state.
  struct stat st {};
  if (::geteuid() == 0 && ::stat(dest.c_str(), &st) == 0 && ::fchown(fd.get(), st.st_uid, st.st_gid) != 0) {
    err = errno;
  }
  const char* step = "chown";
  if (err == 0) {
    step = "write";
    err = write_all(fd.get(), data);
  }
  if (err == 0) {
    step = "fsync";
    if (::fsync(fd.get()) != 0) err = errno;
  }
  if (err == 0) {
    step = "close";
    err = fd.close();
  }
  if (err == 0) {
    step = "rename to";
    if (::rename(tmp.c_str(), dest.c_str()) != 0) err = errno;
  }
  if (err != 0) {
    fd.reset();
    ::unlink(tmp.c_str());
    return errno_error(step, std::string_view(step) == "rename to" ? dest : tmp, err);
  }
  if (err = fsync_directory(dest.parent_path()); err != 0)
    return errno_error("fsync", dest.parent_path(), err);
  return {};
}

fs::path temporary_path(const fs::path& spool_dir, std::string_view id) {
  static std::atomic<unsigned> counter{0};
  return state_directory(spool_dir) / (std::string(kTmpPrefix) + std::string(id) + "-" +
                                       std::to_string(::getpid()) + "-" + std::to_string(counter++));
}

}  // namespace

bool valid_queue_id(std::string_view id) {
  return !id.empty() && id.size() <= kMaxIdLength && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z');
  });
}

std::string_view status_name(RecipientState::Status status) {
  switch (status) {
    case RecipientState::Status::pending:
      return "pending";
    case RecipientState::Status::delivered:
      return "delivered";
    case RecipientState::Status::failed:
      return "failed";
  }
  return "pending";
}

bool finished(const DeliveryState& state) {
  return std::none_of(state.recipients.begin(), state.recipients.end(),
                      [](const RecipientState& r) { return r.status == RecipientState::Status::pending; });
}

fs::path state_directory(const fs::path& spool_dir) { return spool_dir / "state"; }

fs::path state_path(const fs::path& spool_dir, std::string_view id) {
  return state_directory(spool_dir) / std::string(id);
}

DeliveryState fresh_state(const Envelope& envelope) {
  DeliveryState state;
  state.id = envelope.id;
  state.recipients.reserve(envelope.recipients.size());
  for (const auto& rcpt : envelope.recipients) state.recipients.push_back({rcpt, {}, {}});
  return state;
}

Result<std::string> encode_state(const DeliveryState& state) {
  if (!valid_queue_id(state.id)) return make_error("state: invalid queue id (expected [0-9A-Z]+)");
  std::string out;
  out.reserve(128 + state.recipients.size() * 96);
  out.append(kFirstLine).append("\n");
  out.append("id ").append(state.id).append("\n");
  out.append("attempts ").append(std::to_string(state.attempts)).append("\n");
  out.append("first-attempt ").append(std::to_string(state.first_attempt_unix)).append("\n");
  out.append("next-attempt ").append(std::to_string(state.next_attempt_unix)).append("\n");
  out.append("last-error ").append(one_line(state.last_error)).append("\n");
  for (const auto& r : state.recipients) {
    if (r.recipient.empty() || has_line_break(r.recipient)) {
      return make_error("state: " + state.id + ": recipient is empty or contains CR or LF");
    }
    out.append("recipient ").append(status_name(r.status)).append(" ").append(r.recipient).append("\n");
    out.append("reply ").append(one_line(r.last_reply)).append("\n");
  }
  out.append("end\n");
  return out;
}

Result<DeliveryState> decode_state(std::string_view file, std::string_view id) {
  // Splits "name value" lines off the front of file; a line without a space
  // has an empty value only when it is exactly "name" (used for "end").
  std::string_view line;
  auto next_line = [&file, &line] {
    const auto lf = file.find('\n');
    if (lf == std::string_view::npos) return false;
    line = file.substr(0, lf);
    file.remove_prefix(lf + 1);
    return true;
  };
  std::string_view value;
  auto field = [&](std::string_view name) {
    if (!next_line() || line.size() <= name.size() || line.substr(0, name.size()) != name ||
        line[name.size()] != ' ') {
      return false;
    }
    value = line.substr(name.size() + 1);
    return value.find('\r') == std::string_view::npos;
  };

  if (!next_line() || line.substr(0, kFormatName.size()) != kFormatName)
    return corrupt(id, "not a state file");
  if (line != kFirstLine) return corrupt(id, "unsupported format version");

  DeliveryState state;
  if (!field("id") || value != id) return corrupt(id, "bad id line");
  state.id = value;
  if (!field("attempts") || !parse_int(value, state.attempts)) return corrupt(id, "bad attempts line");
  if (!field("first-attempt") || !parse_int(value, state.first_attempt_unix)) {
    return corrupt(id, "bad first-attempt line");
  }
  if (!field("next-attempt") || !parse_int(value, state.next_attempt_unix)) {
    return corrupt(id, "bad next-attempt line");
  }
  if (!field("last-error")) return corrupt(id, "bad last-error line");
  state.last_error = value;

  for (;;) {
    const std::string_view rest = file;
    if (!next_line()) return corrupt(id, "truncated (no end line)");
    if (line == "end") break;
    file = rest;  // not "end": read it again as a recipient line
    if (!field("recipient")) return corrupt(id, "bad recipient line");
    const auto space = value.find(' ');
    if (space == std::string_view::npos) return corrupt(id, "bad recipient line");
    const auto status = parse_status(value.substr(0, space));
    const std::string_view address = value.substr(space + 1);
    if (!status || address.empty()) return corrupt(id, "bad recipient line");
    RecipientState r{std::string(address), *status, {}};
    if (!field("reply")) return corrupt(id, "bad reply line");
    r.last_reply = value;
    state.recipients.push_back(std::move(r));
  }
  if (state.recipients.empty()) return corrupt(id, "no recipients");
  if (!file.empty()) return corrupt(id, "bytes after the end line");
  return state;
}

Result<std::optional<DeliveryState>> read_state(const fs::path& spool_dir, std::string_view id) {
  if (!valid_queue_id(id)) return make_error("state: invalid queue id (expected [0-9A-Z]+)");
  auto bytes = read_whole(state_path(spool_dir, id));
  if (!bytes) return make_error(bytes.error());
  if (!bytes->has_value()) return std::optional<DeliveryState>();
  auto state = decode_state(**bytes, id);
  if (!state) return make_error(state.error());
  return std::optional<DeliveryState>(std::move(state).value());
}

Result<DeliveryState> load_state(const fs::path& spool_dir, const Envelope& envelope) {
  auto saved = read_state(spool_dir, envelope.id);
  if (!saved) return make_error(saved.error());
  if (!saved->has_value()) return fresh_state(envelope);
  DeliveryState state = std::move(**saved);
  const bool same =
      std::equal(state.recipients.begin(), state.recipients.end(), envelope.recipients.begin(),
                 envelope.recipients.end(),
                 [](const RecipientState& r, const std::string& rcpt) { return r.recipient == rcpt; });
  if (!same) return corrupt(envelope.id, "recipients differ from the message's envelope");
  return state;
}

Result<void> save_state(const fs::path& spool_dir, const DeliveryState& state) {
  auto text = encode_state(state);
  if (!text) return make_error(text.error());
  const fs::path dir = state_directory(spool_dir);
  if (int err = make_directory(dir); err != 0) return errno_error("create directory", dir, err);
  return replace_durably(temporary_path(spool_dir, state.id), state_path(spool_dir, state.id), *text);
}

Result<void> remove_state(const fs::path& spool_dir, std::string_view id) {
  if (!valid_queue_id(id)) return make_error("state: invalid queue id (expected [0-9A-Z]+)");
  const fs::path path = state_path(spool_dir, id);
  // No fsync of state/: see delivery_state.hpp ("Removal is not durable").
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error("remove", path, errno);
  return {};
}

Result<std::size_t> prune_states(const fs::path& spool_dir) {
  const fs::path dir = state_directory(spool_dir);
  std::vector<fs::path> doomed;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, kTmpPrefix.size(), kTmpPrefix) == 0) {
      doomed.push_back(it->path());
    } else if (valid_queue_id(name)) {
      std::error_code exists_ec;
      if (!fs::exists(spool_dir / "queue" / name, exists_ec) && !exists_ec) doomed.push_back(it->path());
    }
  }
  if (ec == std::errc::no_such_file_or_directory) return std::size_t{0};
  if (ec) return make_error("state: read directory " + dir.string() + ": " + ec.message());
  std::size_t removed = 0;
  for (const auto& path : doomed) {
    if (::unlink(path.c_str()) == 0) {
      ++removed;
    } else if (errno != ENOENT) {
      return errno_error("remove", path, errno);
    }
  }
  if (removed > 0) {
    if (int err = fsync_directory(dir); err != 0) return errno_error("fsync", dir, err);
  }
  return removed;
}

}  // namespace mxgate::queue
