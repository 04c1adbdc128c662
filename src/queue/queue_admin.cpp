// See queue_admin.hpp.
#include "queue/queue_admin.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <optional>
#include <system_error>

#include "queue/spool.hpp"
#include "util/unique_fd.hpp"

namespace mxgate::queue {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kNotRunning = "not running: queued mail will be tried at next start";
constexpr std::string_view kFlushRequested = "flush requested";

Error errno_error(std::string_view step, const fs::path& path, int err) {
  return make_error("queue: " + std::string(step) + " " + path.string() + ": " + errno_text(err));
}

// The whole file, or nullopt when it does not exist.
Result<std::optional<std::string>> read_if_exists(const fs::path& path) {
  std::string bytes;
  if (const int err = read_file(path, bytes); err != 0) {
    if (err == ENOENT) return std::optional<std::string>();
    return errno_error("read", path, err);
  }
  return std::optional<std::string>(std::move(bytes));
}

}  // namespace

Result<std::vector<std::string>> list_ids(const fs::path& dir) {
  std::vector<std::string> ids;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (valid_queue_id(name)) ids.push_back(std::move(name));
  }
  if (ec) return make_error("queue: read directory " + dir.string() + ": " + ec.message());
  std::sort(ids.begin(), ids.end());
  return ids;
}

namespace {

// Decodes one UTF-8 sequence at s[i]; returns its length, or 0 when the byte
// there does not start a well-formed sequence (RFC 3629).
std::size_t utf8_length(std::string_view s, std::size_t i, char32_t& cp) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c < 0x80) {
    cp = c;
    return 1;
  } else if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    cp = c & 0x0F;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    cp = c & 0x07;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (k == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  return len;
}

bool is_control(char32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F); }

}  // namespace

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    char32_t cp = 0;
    const std::size_t len = utf8_length(s, i, cp);
    if (len == 0 || is_control(cp)) {
      out.push_back('?');
      i += len == 0 ? 1 : len;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

std::string utc_time(std::int64_t unix_seconds, bool iso) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  if (::gmtime_r(&t, &tm) == nullptr) return std::to_string(unix_seconds);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer,
                iso ? "%04d-%02d-%02dT%02d:%02d:%02dZ" : "%04d-%02d-%02d %02d:%02d:%02d UTC",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buffer;
}

namespace {

std::string text_list(const std::vector<QueueEntry>& entries) {
  if (entries.empty()) return "Mail queue is empty\n";
  std::string out;
  std::uint64_t total = 0;
  for (const auto& e : entries) {
    if (!e.error.empty()) {
      out.append(e.id).append("  (unreadable: ").append(printable(e.error)).append(")\n\n");
      continue;
    }
    total += e.size;
    out.append(e.id)
        .append("  ")
        .append(std::to_string(e.size))
        .append(" bytes  arrived ")
        .append(utc_time(e.arrival_unix))
        .append("\n");
    out.append("  from <").append(printable(e.sender)).append(">\n");
    const DeliveryState& s = e.state;
    out.append("  attempts ").append(std::to_string(s.attempts));
    if (s.first_attempt_unix != 0) out.append(", first ").append(utc_time(s.first_attempt_unix));
    out.append(", next ")
        .append(s.next_attempt_unix == 0 ? "now" : utc_time(s.next_attempt_unix))
        .append("\n");
    if (!s.last_error.empty()) out.append("  last error: ").append(printable(s.last_error)).append("\n");
    if (!e.state_error.empty())
      out.append("  state file unusable: ").append(printable(e.state_error)).append("\n");
    for (const auto& r : s.recipients) {
      std::string status(status_name(r.status));
      status.resize(std::max<std::size_t>(status.size(), 9), ' ');
      out.append("  ").append(status).append("  <").append(printable(r.recipient)).append(">");
      if (!r.last_reply.empty()) out.append("  ").append(printable(r.last_reply));
      out.append("\n");
    }
    out.append("\n");
  }
  const std::size_t n = entries.size();
  out.append("-- ")
      .append(std::to_string(n))
      .append(n == 1 ? " message, " : " messages, ")
      .append(std::to_string(total))
      .append(" bytes\n");
  return out;
}

std::string json_list(const std::vector<QueueEntry>& entries) {
  std::string out = "[";
  bool first_entry = true;
  for (const auto& e : entries) {
    out.append(first_entry ? "\n  {" : ",\n  {");
    first_entry = false;
    out.append("\"id\": ").append(json_string(e.id));
    if (!e.error.empty()) {
      out.append(", \"error\": ").append(json_string(e.error)).append("}");
      continue;
    }
    const DeliveryState& s = e.state;
    out.append(", \"arrival\": ").append(json_string(utc_time(e.arrival_unix, true)));
    out.append(", \"arrival_unix\": ").append(std::to_string(e.arrival_unix));
    out.append(", \"size\": ").append(std::to_string(e.size));
    out.append(", \"sender\": ").append(json_string(e.sender));
    out.append(", \"attempts\": ").append(std::to_string(s.attempts));
    out.append(", \"first_attempt_unix\": ").append(std::to_string(s.first_attempt_unix));
    out.append(", \"next_attempt_unix\": ").append(std::to_string(s.next_attempt_unix));
    out.append(", \"last_error\": ").append(json_string(s.last_error));
    if (!e.state_error.empty()) out.append(", \"state_error\": ").append(json_string(e.state_error));
    out.append(", \"recipients\": [");
    bool first_rcpt = true;
    for (const auto& r : s.recipients) {
      out.append(first_rcpt ? "" : ", ");
      first_rcpt = false;
      out.append("{\"address\": ").append(json_string(r.recipient));
      out.append(", \"status\": ").append(json_string(status_name(r.status)));
      out.append(", \"last_reply\": ").append(json_string(r.last_reply)).append("}");
    }
    out.append("]}");
  }
  out.append(entries.empty() ? "]\n" : "\n]\n");
  return out;
}

// The pid in the pid file, or nullopt when there is none or it is not a
// plausible pid (never 0, 1 or negative: kill(0) and kill(-1) address
// groups of processes, and 1 is init).
std::optional<pid_t> read_pid(const fs::path& spool_dir) {
  auto bytes = read_if_exists(pid_file(spool_dir));
  if (!bytes || !bytes->has_value()) return std::nullopt;
  std::string_view text = **bytes;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || pid <= 1) return std::nullopt;
  return pid;
}

bool is_mxgate(pid_t pid) {
  auto comm = read_if_exists(fs::path("/proc") / std::to_string(pid) / "comm");
  if (!comm || !comm->has_value()) return false;
  std::string_view name = **comm;
  if (!name.empty() && name.back() == '\n') name.remove_suffix(1);
  return name == "mxgate";
}

// pidfd_open(2) and pidfd_send_signal(2) by syscall: glibc 2.36's
// <sys/pidfd.h> declares them without extern "C", so C++ cannot link them.
int open_pidfd(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U)); }
int send_pidfd_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0U));
}

}  // namespace

Result<bool> signal_gateway(const fs::path& spool_dir) {
  const auto pid = read_pid(spool_dir);
  if (!pid) return false;
  // Pin the process first: the pidfd keeps referring to this process even
  // if it exits and its pid is reused, so the name checked below and the
  // signal sent after belong to the same process or the send fails (ESRCH).
  UniqueFd pidfd(open_pidfd(*pid));
  if (!pidfd.valid() && errno != ENOSYS) {
    if (errno == ESRCH) return false;
    return make_error("queue: pidfd_open " + std::to_string(*pid) + ": " + errno_text(errno));
  }
  if (!is_mxgate(*pid)) return false;
  const int sent = pidfd.valid() ? send_pidfd_signal(pidfd.get(), kFlushSignal)
                                 : ::kill(*pid, kFlushSignal);  // kernels before 5.3
  if (sent != 0) {
    if (errno == ESRCH) return false;
    return make_error("queue: cannot signal mxgate (pid " + std::to_string(*pid) + "): " + errno_text(errno));
  }
  return true;
}

fs::path pid_file(const fs::path& spool_dir) { return spool_dir / "mxgate.pid"; }

std::string json_string(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  out.reserve(s.size() + 2);
  for (std::size_t i = 0; i < s.size();) {
    char32_t cp = 0;
    const std::size_t len = utf8_length(s, i, cp);
    if (len == 0) {
      out.append("\\ufffd");
      ++i;
      continue;
    }
    switch (cp) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (is_control(cp)) {
          out.append("\\u00").push_back(kHex[(cp >> 4) & 0xF]);
          out.push_back(kHex[cp & 0xF]);
        } else {
          out.append(s.substr(i, len));
        }
    }
    i += len;
  }
  out.push_back('"');
  return out;
}

Result<std::vector<QueueEntry>> queue_entries(const fs::path& spool_dir) {
  auto ids = list_ids(spool_dir / "queue");
  if (!ids) return make_error(ids.error());
  std::vector<QueueEntry> entries;
  entries.reserve(ids->size());
  for (const auto& id : *ids) {
    QueueEntry entry;
    entry.id = id;
    auto bytes = read_if_exists(spool_dir / "queue" / id);
    if (bytes && !bytes->has_value()) continue;  // delivered or deleted since the directory was read
    if (!bytes) {
      entry.error = bytes.error();
      entries.push_back(std::move(entry));
      continue;
    }
    auto message = Spool::decode(**bytes, id);
    if (!message) {
      entry.error = message.error();
      entries.push_back(std::move(entry));
      continue;
    }
    const Envelope& envelope = message->envelope;
    entry.arrival_unix = envelope.received_unix;
    entry.size = message->content.size();
    entry.sender = envelope.sender;
    auto state = load_state(spool_dir, envelope);
    if (state) {
      entry.state = std::move(state).value();
    } else {
      entry.state = fresh_state(envelope);
      entry.state_error = state.error();
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

Result<std::string> queue_list(const fs::path& spool_dir, bool json) {
  auto entries = queue_entries(spool_dir);
  if (!entries) return make_error(entries.error());
  return json ? json_list(*entries) : text_list(*entries);
}

Result<void> queue_delete(const fs::path& spool_dir, std::string_view id) {
  if (!valid_queue_id(id)) return make_error("queue: invalid queue id (expected [0-9A-Z]+)");
  bool removed_any = false;
  for (const fs::path& dir : {spool_dir / "queue", state_directory(spool_dir)}) {
    const fs::path path = dir / std::string(id);
    if (::unlink(path.c_str()) != 0) {
      if (errno == ENOENT) continue;
      return errno_error("remove", path, errno);
    }
    removed_any = true;
    if (int err = fsync_directory(dir); err != 0) return errno_error("fsync", dir, err);
  }
  if (!removed_any) return make_error("queue: no such message: " + std::string(id));
  return {};
}

Result<std::string> queue_flush(const fs::path& spool_dir) {
  auto signalled = signal_gateway(spool_dir);
  if (!signalled) return make_error(signalled.error());
  if (*signalled) return std::string(kFlushRequested);

  // Nobody runs: make every saved state due now.  Only existing state files
  // are rewritten (keeping their owner), never created.
  auto ids = list_ids(state_directory(spool_dir));
  if (!ids) {
    std::error_code ec;
    if (!fs::exists(state_directory(spool_dir), ec)) return std::string(kNotRunning);
    return make_error(ids.error());
  }
  // A bad file does not stop the others; the first error is reported.
  std::size_t failures = 0;
  std::string first_error;
  for (const auto& id : *ids) {
    auto state = read_state(spool_dir, id);
    Result<void> saved;
    if (!state) {
      saved = make_error(state.error());
    } else if (state->has_value() && (*state)->next_attempt_unix != 0) {
      (*state)->next_attempt_unix = 0;
      saved = save_state(spool_dir, **state);
    }
    if (!saved && failures++ == 0) first_error = saved.error();
  }
  if (failures > 0) {
    return make_error("queue: not running, and " + std::to_string(failures) +
                      " state file(s) could not be updated; first: " + first_error);
  }
  return std::string(kNotRunning);
}

}  // namespace mxgate::queue
