// The spool: one file per message in queue/, written via tmp/ (see
// write_durably in util/unique_fd.hpp, and SpoolWriter for the batched form).
//
// File format, version 1 (all header lines end in LF; values are raw bytes
// that may hold any UTF-8 but never CR or LF, which store() refuses):
//
//   MXGATE-SPOOL 1
//   id <queue id>                  must equal the file name
//   received <unix seconds>
//   sender <reverse-path>          empty after the space for the null sender
//   recipient <forward-path>       once per recipient, in RCPT order, at least one
//   smtputf8 0|1
//   8bitmime 0|1
//   client <peer IP>
//   helo <EHLO/HELO argument>
//   tls <protocol and cipher>      empty for cleartext
//   size <N>
//   <empty line>
//   <exactly N content bytes>
//
// Each field appears exactly once (recipient at least once) and unknown
// fields are refused: a change of format is a change of version.  The size
// field lets load() tell a complete file from a truncated one even though
// rename-after-fsync should make truncation impossible.
#include "queue/spool.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <system_error>
#include <utility>

#include "util/unique_fd.hpp"

namespace mxgate::queue {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kFirstLine = "MXGATE-SPOOL 1";
constexpr std::string_view kFormatName = "MXGATE-SPOOL ";
constexpr std::size_t kMaxIdLength = 64;

// IDs become file names, so this is also what keeps "../x" out of the path.
bool valid_id(std::string_view id) {
  return !id.empty() && id.size() <= kMaxIdLength && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z');
  });
}

bool has_line_break(std::string_view value) { return value.find_first_of("\r\n") != std::string_view::npos; }

Error id_error() { return make_error("spool: invalid queue id (expected [0-9A-Z]+)"); }

Error errno_error(std::string_view step, const fs::path& path, int err) {
  return make_error("spool: " + std::string(step) + " " + path.string() + ": " + errno_text(err));
}

// queue/<id>, open for reading, and its size.
struct QueuedFile {
  fs::path path;
  UniqueFd fd;
  std::uint64_t size = 0;
};

Result<QueuedFile> open_queued(const fs::path& dir, std::string_view id) {
  if (!valid_id(id)) return id_error();
  QueuedFile file{dir / "queue" / std::string(id), UniqueFd(), 0};
  file.fd = UniqueFd(::open(file.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file.fd.valid()) return errno_error("open", file.path, errno);
  struct stat st {};
  if (::fstat(file.fd.get(), &st) != 0) return errno_error("stat", file.path, errno);
  file.size = static_cast<std::uint64_t>(st.st_size);
  return file;
}

// mkdir(2) with mode 0700 (queued mail is private), accepting an existing directory.
int make_directory(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) return 0;
  if (errno != EEXIST) return errno;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return errno;
  return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

template <class Int>
bool parse_int(std::string_view text, Int& out) {
  if (text.empty() || text.front() == '+') return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

bool parse_flag(std::string_view text, bool& out) {
  if (text != "0" && text != "1") return false;
  out = text == "1";
  return true;
}

Error corrupt(std::string_view id, std::string_view what) {
  return make_error("spool: " + std::string(id) + ": corrupt: " + std::string(what));
}

}  // namespace

Result<std::string> Spool::encode_header(const Envelope& e, std::size_t content_size) {
  if (!valid_id(e.id)) return id_error();
  struct Field {
    std::string_view name;
    const std::string& value;
  };
  for (const Field f : {Field{"sender", e.sender}, Field{"client", e.client_address}, Field{"helo", e.helo},
                        Field{"tls", e.tls}}) {
    if (has_line_break(f.value)) {
      return make_error("spool: envelope " + std::string(f.name) + " contains CR or LF");
    }
  }
  if (e.recipients.empty()) return make_error("spool: envelope has no recipients");
  for (const auto& rcpt : e.recipients) {
    if (rcpt.empty() || has_line_break(rcpt)) {
      return make_error("spool: envelope recipient is empty or contains CR or LF");
    }
  }

  std::string h;
  h.reserve(256);
  h.append(kFirstLine).append("\n");
  h.append("id ").append(e.id).append("\n");
  h.append("received ").append(std::to_string(e.received_unix)).append("\n");
  h.append("sender ").append(e.sender).append("\n");
  for (const auto& rcpt : e.recipients) h.append("recipient ").append(rcpt).append("\n");
  h.append("smtputf8 ").append(e.smtputf8 ? "1" : "0").append("\n");
  h.append("8bitmime ").append(e.body_8bitmime ? "1" : "0").append("\n");
  h.append("client ").append(e.client_address).append("\n");
  h.append("helo ").append(e.helo).append("\n");
  h.append("tls ").append(e.tls).append("\n");
  h.append("size ").append(std::to_string(content_size)).append("\n");
  h.append("\n");
  return h;
}

Result<Spool> Spool::open(const fs::path& dir) {
  for (const fs::path& d : {dir, dir / "tmp", dir / "queue"}) {
    if (int err = make_directory(d); err != 0) return errno_error("create directory", d, err);
  }
  // Whatever is in tmp/ was never renamed into queue/, so it was never
  // acknowledged with 250: the client still holds the message.
  std::error_code ec;
  for (fs::directory_iterator it(dir / "tmp", ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& leftover = it->path();
    if (::unlink(leftover.c_str()) != 0 && errno != ENOENT) {
      return errno_error("remove leftover", leftover, errno);
    }
  }
  if (ec) return make_error("spool: read directory " + (dir / "tmp").string() + ": " + ec.message());
  return Spool(dir);
}

Result<void> Spool::store(const Envelope& envelope, std::string_view content) const {
  auto header = encode_header(envelope, content.size());
  if (!header) return make_error(header.error());
  auto written = write_durably(dir_ / "tmp" / envelope.id, dir_ / "queue" / envelope.id, [&](int fd) {
    if (int err = write_all(fd, *header); err != 0) return err;
    return write_all(fd, content);
  });
  if (!written) return make_error("spool: " + written.error());
  return {};
}

std::vector<std::string> Spool::list() const {
  std::vector<std::string> ids;
  std::error_code ec;
  for (fs::directory_iterator it(dir_ / "queue", ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (valid_id(name)) ids.push_back(std::move(name));
  }
  // IDs are fixed-width with digits in ASCII order, so string order is time order.
  std::sort(ids.begin(), ids.end());
  return ids;
}

Result<std::string> Spool::read(std::string_view id, std::string buffer) const {
  auto file = open_queued(dir_, id);
  if (!file) return make_error(file.error());
  buffer.clear();
  buffer.reserve(static_cast<std::size_t>(file->size));
  if (const int err = read_all(file->fd.get(), buffer); err != 0) return errno_error("read", file->path, err);
  return buffer;
}

namespace {

// The header of a spool file: message.content is left empty, file is
// advanced to the first content byte and size is the declared content size.
// Whether that many bytes follow is the caller's check.
Result<SpooledMessage> parse_header(std::string_view& file, std::string_view id, std::uint64_t& size) {
  auto next_line = [&file](std::string_view& line) {
    const auto lf = file.find('\n');
    if (lf == std::string_view::npos) return false;
    line = file.substr(0, lf);
    file.remove_prefix(lf + 1);
    return true;
  };

  std::string_view line;
  if (!next_line(line) || line.substr(0, kFormatName.size()) != kFormatName) {
    return corrupt(id, "not a spool file");
  }
  if (line != kFirstLine) return corrupt(id, "unsupported format version");

  SpooledMessage message;
  Envelope& e = message.envelope;
  size = 0;
  bool seen_id = false, seen_received = false, seen_sender = false, seen_smtputf8 = false,
       seen_8bitmime = false, seen_client = false, seen_helo = false, seen_tls = false, seen_size = false;

  for (;;) {
    if (!next_line(line)) return corrupt(id, "truncated header");
    if (line.empty()) break;
    const auto space = line.find(' ');
    if (space == std::string_view::npos) return corrupt(id, "header line without a value");
    const std::string_view name = line.substr(0, space);
    const std::string_view value = line.substr(space + 1);
    if (value.find('\r') != std::string_view::npos) return corrupt(id, "CR in header");

    // Single-valued fields refuse a repeat; a repeat means a damaged file.
    auto first = [](bool& seen) { return !std::exchange(seen, true); };
    auto text = [&](bool& seen, std::string& field) {
      field = value;
      return first(seen);
    };
    bool ok = false;
    if (name == "recipient") {
      e.recipients.emplace_back(value);
      ok = !value.empty();
    } else if (name == "id") {
      ok = text(seen_id, e.id) && value == id;
    } else if (name == "received") {
      ok = first(seen_received) && parse_int(value, e.received_unix);
    } else if (name == "sender") {
      ok = text(seen_sender, e.sender);
    } else if (name == "smtputf8") {
      ok = first(seen_smtputf8) && parse_flag(value, e.smtputf8);
    } else if (name == "8bitmime") {
      ok = first(seen_8bitmime) && parse_flag(value, e.body_8bitmime);
    } else if (name == "client") {
      ok = text(seen_client, e.client_address);
    } else if (name == "helo") {
      ok = text(seen_helo, e.helo);
    } else if (name == "tls") {
      ok = text(seen_tls, e.tls);
    } else if (name == "size") {
      ok = first(seen_size) && parse_int(value, size);
    } else {
      return corrupt(id, "unknown header field");
    }
    if (!ok) return corrupt(id, "bad or repeated header field " + std::string(name));
  }

  if (!(seen_id && seen_received && seen_sender && seen_smtputf8 && seen_8bitmime && seen_client &&
        seen_helo && seen_tls && seen_size) ||
      e.recipients.empty()) {
    return corrupt(id, "missing header field");
  }
  return message;
}

Result<void> check_content_size(std::uint64_t declared, std::uint64_t present, std::string_view id) {
  if (present < declared) {
    return corrupt(id, "truncated: " + std::to_string(declared) + " content bytes declared, " +
                           std::to_string(present) + " present");
  }
  if (present > declared) {
    return corrupt(id, std::to_string(present - declared) + " bytes after the declared content");
  }
  return {};
}

// The header and the declared content size of a whole spool file.
Result<SpooledMessage> decode_header(std::string_view& file, std::string_view id) {
  std::uint64_t size = 0;
  auto message = parse_header(file, id, size);
  if (!message) return message;
  if (auto sized = check_content_size(size, file.size(), id); !sized) return make_error(sized.error());
  return message;
}

// pread(2) of exactly size bytes at offset, resuming after EINTR and short
// reads.  0, errno, or EIO when the file ends early.
int pread_exact(int fd, char* out, std::size_t size, off_t offset) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, out, size, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;
    out += n;
    size -= static_cast<std::size_t>(n);
    offset += n;
  }
  return 0;
}

}  // namespace

Result<SpooledMessage> Spool::decode(std::string_view file, std::string_view id) {
  auto message = decode_header(file, id);
  if (message) message->content.assign(file);
  return message;
}

Result<SpooledMessage> Spool::decode(std::string&& file, std::string_view id) {
  std::string_view rest = file;
  auto message = decode_header(rest, id);
  if (message) {
    file.erase(0, file.size() - rest.size());
    message->content = std::move(file);
  }
  return message;
}

Result<SpooledMessage> Spool::load(std::string_view id) const {
  LoadFailure failure;
  return load(id, {}, failure);
}

Result<SpooledMessage> Spool::load(std::string_view id, std::string buffer, LoadFailure& failure,
                                   ContentRead content) const {
  failure = LoadFailure::io;
  auto file = open_queued(dir_, id);
  if (!file) return make_error(file.error());
  const fs::path& path = file->path;
  const int fd = file->fd.get();
  const std::uint64_t file_size = file->size;

  // The header is a few hundred bytes; one read of the start holds it and
  // usually the whole of a small message.  The rest of the content then goes
  // straight into buffer, which the scheduler hands back message after
  // message: no copy of the file in user space, no zeroing of storage that
  // is about to be overwritten (resize() only zero-fills growth).
  char head[16 * 1024];
  const std::size_t head_size = static_cast<std::size_t>(std::min<std::uint64_t>(file_size, sizeof head));
  if (const int err = pread_exact(fd, head, head_size, 0); err != 0) return errno_error("read", path, err);
  std::string_view rest(head, head_size);
  std::uint64_t declared = 0;
  auto message = parse_header(rest, id, declared);
  if (!message && head_size == file_size) {
    failure = LoadFailure::corrupt;
    return message;
  }
  if (!message) {
    // A header longer than head (thousands of recipients): the simple way,
    // content included whatever content says.
    auto bytes = read(id, std::move(buffer));
    if (!bytes) return make_error(bytes.error());
    auto decoded = decode(std::move(*bytes), id);
    failure = decoded ? LoadFailure::none : LoadFailure::corrupt;
    return decoded;
  }
  const std::uint64_t header_size = head_size - rest.size();
  if (auto sized = check_content_size(declared, file_size - header_size, id); !sized) {
    failure = LoadFailure::corrupt;
    return make_error(sized.error());
  }
  failure = LoadFailure::none;
  if (content == ContentRead::if_small && rest.size() < declared) {
    message->content_pending = true;
    return message;
  }
  failure = LoadFailure::io;
  buffer.resize(static_cast<std::size_t>(declared));
  rest.copy(buffer.data(), rest.size());
  if (const int err = pread_exact(fd, buffer.data() + rest.size(), buffer.size() - rest.size(),
                                  static_cast<off_t>(head_size));
      err != 0) {
    return errno_error("read", path, err);
  }
  message->content = std::move(buffer);
  failure = LoadFailure::none;
  return message;
}

Result<void> Spool::remove(std::string_view id) const {
  if (!valid_id(id)) return id_error();
  const fs::path path = dir_ / "queue" / std::string(id);
  // No fsync of queue/ (it cost one disk flush per delivered message): see
  // spool.hpp.  Durability is only owed to what is acknowledged, and a
  // removal acknowledges nothing.
  if (::unlink(path.c_str()) != 0) return errno_error("remove", path, errno);
  return {};
}

Result<void> Spool::quarantine(std::string_view id) const {
  if (!valid_id(id)) return id_error();
  const fs::path corrupt_dir = dir_ / "corrupt";
  if (int err = make_directory(corrupt_dir); err != 0) {
    return errno_error("create directory", corrupt_dir, err);
  }
  const fs::path from = dir_ / "queue" / std::string(id);
  const fs::path to = corrupt_dir / std::string(id);
  if (::rename(from.c_str(), to.c_str()) != 0) return errno_error("move", from, errno);
  if (int err = fsync_directory(corrupt_dir); err != 0) return errno_error("fsync", corrupt_dir, err);
  if (int err = fsync_directory(from.parent_path()); err != 0) {
    return errno_error("fsync", from.parent_path(), err);
  }
  return {};
}

}  // namespace mxgate::queue
