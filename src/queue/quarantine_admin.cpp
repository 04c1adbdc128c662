// See quarantine_admin.hpp.
#include "queue/quarantine_admin.hpp"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE
#include <unistd.h>

#include <cerrno>

#include "queue/queue_admin.hpp"
#include "queue/spool.hpp"
#include "util/unique_fd.hpp"

namespace mxgate::queue {
namespace {

namespace fs = std::filesystem;

Error errno_error(std::string_view step, const fs::path& path, int err) {
  return make_error("quarantine: " + std::string(step) + " " + path.string() + ": " + errno_text(err));
}

fs::path held_directory(const fs::path& spool_dir) { return quarantine_directory(spool_dir) / "queue"; }

bool same_name(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if ((x >= 'A' && x <= 'Z' ? x + 32 : x) != (y >= 'A' && y <= 'Z' ? y + 32 : y)) return false;
  }
  return true;
}

// Reads and decodes one held message; an error names the problem.
Result<SpooledMessage> load_held(const fs::path& spool_dir, std::string_view id) {
  if (!valid_queue_id(id)) return make_error("quarantine: invalid id (expected [0-9A-Z]+)");
  const fs::path path = held_directory(spool_dir) / std::string(id);
  std::string bytes;
  if (const int err = read_file(path, bytes); err != 0) {
    if (err == ENOENT) return make_error("quarantine: no such message: " + std::string(id));
    return errno_error("read", path, err);
  }
  auto message = Spool::decode(std::move(bytes), id);
  if (!message) return make_error("quarantine: " + std::string(id) + ": " + message.error());
  return message;
}

QuarantineEntry entry_of(const SpooledMessage& message) {
  QuarantineEntry entry;
  const Envelope& envelope = message.envelope;
  entry.id = envelope.id;
  entry.arrival_unix = envelope.received_unix;
  entry.size = message.content.size();
  entry.sender = envelope.sender;
  entry.recipients = envelope.recipients;
  entry.client_address = envelope.client_address;
  entry.verdict = header_value(message.content, "X-mxgate-Verdict");
  return entry;
}

std::string json_entry(const QuarantineEntry& e) {
  std::string out = "{\"id\": " + json_string(e.id);
  if (!e.error.empty()) return out + ", \"error\": " + json_string(e.error) + "}";
  out += ", \"arrival\": " + json_string(utc_time(e.arrival_unix, true));
  out += ", \"arrival_unix\": " + std::to_string(e.arrival_unix);
  out += ", \"size\": " + std::to_string(e.size);
  out += ", \"sender\": " + json_string(e.sender);
  out += ", \"recipients\": [";
  for (std::size_t i = 0; i < e.recipients.size(); ++i) out += (i ? ", " : "") + json_string(e.recipients[i]);
  out += "], \"client_address\": " + json_string(e.client_address);
  out += ", \"verdict\": " + json_string(e.verdict) + "}";
  return out;
}

std::string text_entry(const QuarantineEntry& e) {
  if (!e.error.empty()) return e.id + "  (unreadable: " + printable(e.error) + ")\n";
  std::string out = e.id + "  " + std::to_string(e.size) + " bytes  arrived " + utc_time(e.arrival_unix) +
                    "  client " + printable(e.client_address) + "\n";
  out += "  from <" + printable(e.sender) + ">\n";
  for (const auto& r : e.recipients) out += "  to   <" + printable(r) + ">\n";
  out += "  verdict: " + (e.verdict.empty() ? std::string("(none recorded)") : printable(e.verdict)) + "\n";
  return out;
}

}  // namespace

fs::path quarantine_directory(const fs::path& spool_dir) { return spool_dir / "quarantine"; }

std::string header_value(std::string_view content, std::string_view name) {
  std::size_t pos = 0;
  while (pos < content.size()) {
    const std::size_t eol = content.find('\n', pos);
    std::string_view line = content.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) return {};  // end of the header block
    const std::size_t colon = line.find(':');
    if (line.front() != ' ' && line.front() != '\t' && colon != std::string_view::npos &&
        same_name(line.substr(0, colon), name)) {
      std::string value(line.substr(colon + 1));
      // Unfold the continuation lines (RFC 5322 section 2.2.3).
      std::size_t next = eol == std::string_view::npos ? content.size() : eol + 1;
      while (next < content.size() && (content[next] == ' ' || content[next] == '\t')) {
        const std::size_t end = content.find('\n', next);
        std::string_view more = content.substr(next, end == std::string_view::npos ? std::string_view::npos : end - next);
        if (!more.empty() && more.back() == '\r') more.remove_suffix(1);
        const std::size_t text = more.find_first_not_of(" \t");
        if (text != std::string_view::npos) {
          value += ' ';
          value += more.substr(text);
        }
        next = end == std::string_view::npos ? content.size() : end + 1;
      }
      const auto first = value.find_first_not_of(" \t");
      return first == std::string::npos ? std::string() : value.substr(first);
    }
    if (eol == std::string_view::npos) break;
    pos = eol + 1;
  }
  return {};
}

Result<std::vector<QuarantineEntry>> quarantine_entries(const fs::path& spool_dir) {
  std::vector<QuarantineEntry> entries;
  std::error_code ec;
  if (!fs::exists(held_directory(spool_dir), ec)) return entries;  // nothing was ever held
  auto ids = list_ids(held_directory(spool_dir));
  if (!ids) return make_error(ids.error());
  for (const auto& id : *ids) {
    auto message = load_held(spool_dir, id);
    if (!message) {
      if (message.error().find("no such message") != std::string::npos) continue;  // released meanwhile
      QuarantineEntry entry;
      entry.id = id;
      entry.error = message.error();
      entries.push_back(std::move(entry));
      continue;
    }
    entries.push_back(entry_of(*message));
  }
  return entries;
}

Result<std::string> quarantine_list(const fs::path& spool_dir, bool json) {
  auto entries = quarantine_entries(spool_dir);
  if (!entries) return make_error(entries.error());
  if (json) {
    std::string out = "[";
    for (std::size_t i = 0; i < entries->size(); ++i) out += (i ? ",\n  " : "\n  ") + json_entry((*entries)[i]);
    out += entries->empty() ? "]\n" : "\n]\n";
    return out;
  }
  if (entries->empty()) return std::string("Quarantine is empty\n");
  std::string out;
  std::uint64_t total = 0;
  for (const auto& e : *entries) {
    out += text_entry(e) + "\n";
    total += e.size;
  }
  const std::size_t n = entries->size();
  out += "-- " + std::to_string(n) + (n == 1 ? " message, " : " messages, ") + std::to_string(total) + " bytes\n";
  return out;
}

Result<std::string> quarantine_show(const fs::path& spool_dir, std::string_view id, bool json) {
  auto message = load_held(spool_dir, id);
  if (!message) return make_error(message.error());
  const QuarantineEntry entry = entry_of(*message);
  if (json) {
    std::string out = json_entry(entry);
    out.pop_back();
    return out + ", \"content\": " + json_string(message->content) + "}\n";
  }
  std::string out = text_entry(entry) + "\n";
  // Line by line through printable(): CR LF becomes a newline, every other
  // control character (escape sequences above all) a '?'.
  std::string_view content = message->content;
  while (!content.empty()) {
    const std::size_t eol = content.find('\n');
    std::string_view line = content.substr(0, eol);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    std::string shown;
    for (std::size_t start = 0; start <= line.size();) {
      const std::size_t tab = line.find('\t', start);
      shown += printable(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
      if (tab == std::string_view::npos) break;
      shown += '\t';
      start = tab + 1;
    }
    out += shown + "\n";
    if (eol == std::string_view::npos) break;
    content.remove_prefix(eol + 1);
  }
  return out;
}

Result<std::string> quarantine_release(const fs::path& spool_dir, std::string_view id) {
  // Decoding first: a corrupt file is not handed to delivery.
  auto message = load_held(spool_dir, id);
  if (!message) return make_error(message.error());
  const fs::path from = held_directory(spool_dir) / std::string(id);
  const fs::path to = spool_dir / "queue" / std::string(id);
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) != 0) {
    int err = errno;
    if (err == EINVAL || err == ENOSYS) err = ::link(from.c_str(), to.c_str()) == 0 ? 0 : errno;
    if (err != 0) return errno_error("move to", to, err);
    ::unlink(from.c_str());
  }
  // The queue first: until its fsync is done, a crash may bring back the
  // quarantined copy, never lose both.
  if (int err = fsync_directory(to.parent_path()); err != 0) return errno_error("fsync", to.parent_path(), err);
  if (int err = fsync_directory(from.parent_path()); err != 0) return errno_error("fsync", from.parent_path(), err);
  auto signalled = signal_gateway(spool_dir);
  if (!signalled) return make_error(signalled.error());
  return "released " + std::string(id) + ": " +
         (*signalled ? std::string("flush requested") : std::string("not running: it will be delivered at next start"));
}

Result<void> quarantine_delete(const fs::path& spool_dir, std::string_view id) {
  if (!valid_queue_id(id)) return make_error("quarantine: invalid id (expected [0-9A-Z]+)");
  const fs::path path = held_directory(spool_dir) / std::string(id);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return make_error("quarantine: no such message: " + std::string(id));
    return errno_error("remove", path, errno);
  }
  if (int err = fsync_directory(path.parent_path()); err != 0) return errno_error("fsync", path.parent_path(), err);
  return {};
}

}  // namespace mxgate::queue
