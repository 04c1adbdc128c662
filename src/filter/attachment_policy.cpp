#include "filter/attachment_policy.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "filter/file_type.hpp"

namespace mxgate::filter {
namespace {

constexpr std::string_view kExecutable = "EXECUTABLE_ATTACHMENT";
constexpr std::string_view kScript = "SCRIPT_ATTACHMENT";
constexpr std::string_view kMacro = "OFFICE_MACRO";
constexpr std::string_view kDoubleExtension = "DOUBLE_EXTENSION";
constexpr std::string_view kEncrypted = "ENCRYPTED_ARCHIVE";
constexpr std::string_view kArchiveLimit = "ARCHIVE_LIMIT";
constexpr std::string_view kUnreadable = "ARCHIVE_UNREADABLE";

constexpr std::size_t kReadChunk = std::size_t{64} * 1024;
constexpr std::size_t kMaxDisplayedName = 200;  // bytes of one name in a detail

// Names Windows runs, installs, opens as a shell object or mounts on a
// double click, and that nobody needs to mail.  Disc and disk images are
// here because Windows mounts them without carrying the Mark-of-the-Web to
// their content; OneNote notebooks because they embed any of the others
// behind a "double-click to view" button (the 2023 campaigns); cabinets
// because libarchive could read them but nothing here sniffs them.  .exe and
// .dll are judged by content: a real PE is EXECUTABLE_ATTACHMENT.
// clang-format off
constexpr std::string_view kLauncherExtensions[] = {
    "js", "jse", "vbs", "vbe", "vb", "wsf", "wsh", "wsc", "ws", "sct", "hta",      // Script Host, HTML apps
    "ps1", "psm1", "psd1", "ps1xml", "psc1", "bat", "cmd",                         // PowerShell, batch
    "scr", "com", "pif", "cpl", "xll",                                             // PE images by other names
    "msi", "msp", "mst", "msc", "msix", "msixbundle", "appx", "appxbundle",        // installers
    "appinstaller", "application",                                                 // App Installer, ClickOnce
    "jar", "jnlp",                                                                 // Java
    "lnk", "url", "scf", "library-ms", "searchconnector-ms", "settingcontent-ms",  // shortcuts, shell files
    "reg", "inf", "chm", "hlp",                                                    // registry, setup, help
    "iso", "img", "vhd", "vhdx",                                                   // disc and disk images
    "one", "cab",                                                                  // OneNote, cabinets
};
// clang-format on

// What a lure pretends to be in "name.<decoy>.<real>".
constexpr std::string_view kDocumentExtensions[] = {
    "pdf", "doc", "docx", "docm", "dot", "xls",  "xlsx", "xlsm", "ppt", "pptx", "rtf",  "txt",
    "csv", "odt", "ods",  "odp",  "jpg", "jpeg", "png",  "gif",  "bmp", "tif",  "tiff", "mp3",
    "mp4", "wav", "avi",  "mov",  "htm", "html", "xml",  "eml",  "msg", "zip",  "rar",  "7z"};

// Names that say "archive", for ARCHIVE_UNREADABLE.
constexpr std::string_view kArchiveExtensions[] = {"zip", "zipx", "jar",  "rar", "7z",  "tar",
                                                   "gz",  "tgz",  "gzip", "iso", "img", "udf"};

template <std::size_t N>
bool contains(const std::string_view (&list)[N], std::string_view s) {
  return std::find(std::begin(list), std::end(list), s) != std::end(list);
}

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

bool equals_nocase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && lower(a) == lower(b);
}

bool contains_nocase(std::string_view haystack, std::string_view needle) {
  return lower(haystack).find(lower(needle)) != std::string::npos;
}

// ---- names ------------------------------------------------------------------

// One UTF-8 code point at s[i], advancing i; a malformed sequence yields
// U+FFFD and one byte, so every input makes progress.
char32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto byte = [&](std::size_t at) { return static_cast<unsigned char>(s[at]); };
  const unsigned char lead = byte(i);
  std::size_t length = 0;
  char32_t cp = 0;
  if (lead < 0x80) {
    ++i;
    return lead;
  }
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2, cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3, cp = lead & 0x0F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4, cp = lead & 0x07;
  } else {
    ++i;
    return 0xFFFD;
  }
  if (s.size() - i < length) {
    ++i;
    return 0xFFFD;
  }
  for (std::size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) {
      ++i;
      return 0xFFFD;
    }
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  const bool overlong = (length == 3 && cp < 0x800) || (length == 4 && cp < 0x10000);
  if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return 0xFFFD;
  }
  i += length;
  return cp;
}

// Bidirectional embeddings, overrides and isolates: U+202E turns
// "invoice<RLO>fdp.exe" into "invoiceexe.pdf" on screen.
bool is_bidi_control(char32_t cp) {
  return cp == 0x061C || cp == 0x200E || cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

// Characters that draw nothing: zero-width spaces and joiners, word joiner,
// BOM, soft hyphen, Hangul fillers.  They can split ".e<ZWSP>xe" or pad a
// name without being seen.
bool is_invisible(char32_t cp) {
  return is_bidi_control(cp) || cp == 0x00AD || cp == 0x034F || cp == 0x115F || cp == 0x1160 ||
         cp == 0x180E || (cp >= 0x200B && cp <= 0x200D) || (cp >= 0x2060 && cp <= 0x2064) || cp == 0x3164 ||
         cp == 0xFEFF || cp == 0xFFA0;
}

bool is_unicode_space(char32_t cp) {
  return cp == 0x00A0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

std::string_view basename(std::string_view path) {
  const auto slash = path.find_last_of("/\\");
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// A name as the user sees it on screen: invisible characters dropped, Unicode
// spaces as ASCII spaces, ASCII lower case.
struct NameView {
  std::string visible;
  bool bidi_control = false;
};

NameView view_name(std::string_view name) {
  NameView view;
  std::size_t i = 0;
  while (i < name.size()) {
    const std::size_t start = i;
    const char32_t cp = next_code_point(name, i);
    if (is_bidi_control(cp)) view.bidi_control = true;
    if (is_invisible(cp)) continue;
    if (is_unicode_space(cp)) {
      view.visible += ' ';
    } else {
      view.visible.append(name.substr(start, i - start));
    }
  }
  view.visible = lower(view.visible);
  return view;
}

bool is_padding(char c) { return c == ' ' || c == '\t' || c == '.' || c == '_'; }

// The extension of name after the last dot, once trailing dots and spaces
// are gone (Windows drops them, so "setup.exe. ." runs as setup.exe); the
// stem before that dot is stored in stem.
std::string_view last_extension(std::string_view name, std::string_view& stem) {
  while (!name.empty() && (name.back() == '.' || name.back() == ' ')) name.remove_suffix(1);
  const auto dot = name.rfind('.');
  if (dot == std::string_view::npos) {
    stem = name;
    return {};
  }
  stem = name.substr(0, dot);
  return name.substr(dot + 1);
}

bool is_dangerous_extension(std::string_view ext) {
  return ext == "exe" || ext == "dll" || contains(kLauncherExtensions, ext);
}

// A name for a finding's detail: control characters as '?', invisible
// characters spelled out, at most kMaxDisplayedName bytes.
std::string display_name(std::string_view name) {
  if (name.empty()) return "(unnamed)";
  std::string out;
  std::size_t i = 0;
  while (i < name.size() && out.size() < kMaxDisplayedName) {
    const std::size_t start = i;
    const char32_t cp = next_code_point(name, i);
    if (cp < 0x20 || cp == 0x7F || cp == 0xFFFD) {
      out += '?';
    } else if (is_invisible(cp)) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out += "<U+";
      for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(cp >> shift) & 0xF];
      out += '>';
    } else {
      out.append(name.substr(start, i - start));
    }
  }
  if (i < name.size()) out += "...";
  return out;
}

bool has_archive_extension(std::string_view name) {
  std::string_view stem;
  const NameView view = view_name(basename(name));
  return contains(kArchiveExtensions, last_extension(view.visible, stem));
}

// The single entry of a bare gzip stream, named the way gunzip would.
std::string gunzipped_name(std::string_view gzip_name) {
  const std::string name = lower(basename(gzip_name));
  const std::string_view original = basename(gzip_name);
  auto ends_with = [&](std::string_view suffix) {
    return name.size() > suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".tgz")) return std::string(original.substr(0, original.size() - 4)) + ".tar";
  for (std::string_view suffix : {".gz", ".gzip", ".z"}) {
    if (ends_with(suffix)) return std::string(original.substr(0, original.size() - suffix.size()));
  }
  return "data";
}

std::string_view describe(FileKind kind, std::string_view bytes) {
  if (kind == FileKind::macho_executable && bytes.substr(0, 4) == "\xCA\xFE\xBA\xBE") {
    return "Mach-O universal binary or Java class";
  }
  return to_string(kind);
}

// ---- libarchive ---------------------------------------------------------------

struct ArchiveReadFree {
  void operator()(archive* a) const noexcept { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReadFree>;

// Only the format the magic number announced, and no filter that would run
// an external program (archive_read_support_filter_all() does for lrzip,
// lzop and grzip): a gzip stream holds a tar or a single raw file.
bool enable_reader(archive* a, FileKind kind) {
  switch (kind) {
    case FileKind::zip:
      return archive_read_support_format_zip(a) == ARCHIVE_OK;
    case FileKind::rar:
      return archive_read_support_format_rar(a) == ARCHIVE_OK &&
             archive_read_support_format_rar5(a) == ARCHIVE_OK;
    case FileKind::seven_zip:
      return archive_read_support_format_7zip(a) == ARCHIVE_OK;
    case FileKind::tar:
      return archive_read_support_format_tar(a) == ARCHIVE_OK;
    case FileKind::iso9660:
      return archive_read_support_format_iso9660(a) == ARCHIVE_OK;
    case FileKind::gzip:
      // ARCHIVE_WARN here means "through an external gzip program".
      return archive_read_support_filter_gzip(a) == ARCHIVE_OK &&
             archive_read_support_format_tar(a) == ARCHIVE_OK &&
             archive_read_support_format_raw(a) == ARCHIVE_OK;
    default:
      return false;
  }
}

std::string error_of(archive* a) {
  const char* message = archive_error_string(a);
  return message != nullptr ? display_name(message) : "unknown libarchive error";
}

bool mentions_encryption(std::string_view message) {
  return contains_nocase(message, "encrypt") || contains_nocase(message, "passphrase") ||
         contains_nocase(message, "password");
}

std::string entry_pathname(archive_entry* entry) {
  // The UTF-8 form needs a conversion that fails in the C locale; the raw
  // form then holds the archive's own bytes, which are UTF-8 in practice.
  if (const char* utf8 = archive_entry_pathname_utf8(entry)) return utf8;
  if (const char* raw = archive_entry_pathname(entry)) return raw;
  return {};
}

// ---- the scan of one part -------------------------------------------------------

// What archive inspection has used up so far in one message.
struct MessageBudget {
  std::size_t entries = 0;
  std::uint64_t expanded_bytes = 0;
  std::string exhausted;  // the limit that ended archive inspection; empty while within limits
};

class PartScan {
 public:
  PartScan(const AttachmentLimits& limits, MessageBudget& budget) : limits_(limits), budget_(budget) {}

  void scan(const Part& part, FileKind kind) {
    const std::string path = display_name(basename(part.filename));
    check_name(path, basename(part.filename));
    check_content(path, part.filename, part.data, kind, 0, part.truncated);
  }

  void add_to(Findings& findings) const {
    for (const auto& hit : hits_) {
      std::string detail = hit.detail;
      if (hit.more > 0) detail += " (and " + std::to_string(hit.more) + " more)";
      findings.add(Category::malware, std::string(hit.rule), 1.0, std::move(detail));
    }
  }

 private:
  enum class ReadResult { complete, over_budget, failed };

  void report(std::string_view rule, std::string detail) {
    for (auto& hit : hits_) {
      if (hit.rule == rule) {
        ++hit.more;
        return;
      }
    }
    hits_.push_back(Hit{rule, std::move(detail), 0});
  }

  void check_name(const std::string& path, std::string_view name) {
    const NameView view = view_name(name);
    std::string_view stem;
    const std::string_view ext = last_extension(view.visible, stem);
    if (contains(kLauncherExtensions, ext)) {
      report(kScript, path + ": ." + std::string(ext) + " file");
    }
    if (!is_dangerous_extension(ext)) return;
    while (!stem.empty() && is_padding(stem.back())) stem.remove_suffix(1);
    std::string_view before;
    const std::string_view decoy = last_extension(stem, before);
    if (contains(kDocumentExtensions, decoy)) {
      report(kDoubleExtension, path + ": ." + std::string(decoy) + " name hides ." + std::string(ext));
    } else if (view.bidi_control) {
      report(kDoubleExtension, path + ": bidirectional override hides ." + std::string(ext));
    }
  }

  void check_content(const std::string& path, std::string_view name, std::string_view bytes, FileKind kind,
                     unsigned nesting, bool cut) {
    if (is_executable(kind)) report(kExecutable, path + ": " + std::string(describe(kind, bytes)));
    if (kind == FileKind::windows_shortcut) report(kScript, path + ": Windows shortcut");
    if (kind == FileKind::iso9660) report(kScript, path + ": ISO 9660/UDF disc image");
    if (kind == FileKind::ole_compound && ole_has_vba_project(bytes)) {
      report(kMacro, path + ": VBA project in a compound file");
    }
    if (is_archive(kind)) list_archive(path, name, bytes, kind, nesting + 1, cut);
  }

  // Entries that say "macros" by their place in an OOXML (ECMA-376) or ODF
  // package, whatever their content.
  void check_package_entry(const std::string& entry_path, std::string_view entry_name, bool odf) {
    if (equals_nocase(basename(entry_name), "vbaProject.bin")) {
      report(kMacro, entry_path + ": VBA project part");
    }
    if (!odf) return;
    // ODF Basic: Basic/<library>/<module>.xml beside the script-lb.xml and
    // script-lc.xml indexes; other languages live under Scripts/.
    const bool basic_module = entry_name.starts_with("Basic/") &&
                              std::count(entry_name.begin(), entry_name.end(), '/') == 2 &&
                              entry_name.ends_with(".xml") && !basename(entry_name).starts_with("script-l") &&
                              !basename(entry_name).starts_with("dialog-l");
    const bool script = entry_name.starts_with("Scripts/") && !entry_name.ends_with("/");
    if (basic_module || script) report(kMacro, entry_path + ": ODF macro");
  }

  void list_archive(const std::string& path, std::string_view name, std::string_view bytes, FileKind kind,
                    unsigned level, bool cut) {
    if (level > limits_.max_archive_depth) {
      report(kArchiveLimit, path + ": archive nested deeper than " +
                                std::to_string(limits_.max_archive_depth) + " levels (max_archive_depth)");
      return;
    }
    if (!budget_.exhausted.empty()) {
      report(kArchiveLimit, path + ": not inspected, " + budget_.exhausted);
      return;
    }
    ArchiveReader reader(archive_read_new());
    if (!reader) throw std::bad_alloc();
    archive* a = reader.get();
    if (!enable_reader(a, kind)) {
      report(kArchiveLimit,
             path + ": not inspected, libarchive cannot read a " + std::string(to_string(kind)));
      return;
    }
    if (archive_read_open_memory(a, bytes.data(), bytes.size()) != ARCHIVE_OK) {
      archive_failed(path, name, kind, error_of(a), false, cut);
      return;
    }
    if (kind == FileKind::gzip && archive_filter_code(a, 0) != ARCHIVE_FILTER_GZIP) {
      // Raw data that only looked like gzip: listing it would find itself.
      archive_failed(path, name, kind, "not a gzip stream", false, cut);
      return;
    }
    bool saw_content = false;  // some entry's data was decompressed
    bool odf = false;
    bool encrypted_entry = false;
    // A nested archive may have used up the message's budget.
    while (budget_.exhausted.empty()) {
      archive_entry* entry = nullptr;
      const int status = archive_read_next_header(a, &entry);
      if (status == ARCHIVE_EOF) break;
      if (status != ARCHIVE_OK && status != ARCHIVE_WARN) {
        archive_failed(path, name, kind, error_of(a), saw_content, cut);
        return;
      }
      if (budget_.entries >= limits_.max_archive_entries) {
        exhaust(path, "more than " + std::to_string(limits_.max_archive_entries) +
                          " archive entries in the message (max_archive_entries)");
        return;
      }
      ++budget_.entries;
      const std::string entry_name =
          archive_format(a) == ARCHIVE_FORMAT_RAW ? gunzipped_name(name) : entry_pathname(entry);
      const std::string entry_path = path + " > " + display_name(entry_name);
      check_name(entry_path, basename(entry_name));
      check_package_entry(entry_path, entry_name, odf);
      if (archive_entry_is_encrypted(entry)) {
        report(kEncrypted, entry_path + ": encrypted entry");
        encrypted_entry = true;
        continue;
      }
      const auto type = archive_entry_filetype(entry);
      if (type == AE_IFDIR || type == AE_IFLNK) continue;
      std::string data;
      const ReadResult read = read_entry(a, basename(entry_name), data);
      saw_content = saw_content || !data.empty();
      if (read != ReadResult::complete) {
        // What was read still counts: the start of a PE is a PE.  Cut data
        // is not called unreadable for being cut.
        if (read == ReadResult::over_budget) {
          exhaust(entry_path, "more than " + std::to_string(limits_.max_expanded_bytes) +
                                  " bytes expanded from archives in the message (max_expanded_bytes)");
        } else {
          archive_failed(path, name, kind, error_of(a), saw_content, cut);
        }
        check_content(entry_path, basename(entry_name), data, sniff(data), level, true);
        return;
      }
      saw_content = true;
      if (equals_nocase(entry_name, "[Content_Types].xml") &&
          (contains_nocase(data, "macroEnabled") || contains_nocase(data, "macrosheet"))) {
        report(kMacro, entry_path + ": macro-enabled content type");
      }
      if (entry_name == "mimetype" && data.starts_with("application/vnd.oasis.opendocument")) odf = true;
      check_content(entry_path, basename(entry_name), data, sniff(data), level, false);
    }
    // Formats that know encryption only for the archive as a whole.
    if (!encrypted_entry && archive_read_has_encrypted_entries(a) > 0) {
      report(kEncrypted, path + ": encrypted entries");
    }
  }

  // Reads the current entry to its end, counting every byte against the
  // message's budget.  Keeps the whole entry when it has to be looked into
  // (an archive, a compound file, an OOXML or ODF index), else only the
  // prefix sniff() needs.
  ReadResult read_entry(archive* a, std::string_view name, std::string& kept) {
    bool decided = false;
    bool keep_all = false;
    scratch_.resize(kReadChunk);
    for (;;) {
      const std::uint64_t room = limits_.max_expanded_bytes - budget_.expanded_bytes;
      // Asking for one byte more than the room tells "exactly at the limit"
      // from "past it" without decompressing further.
      const std::size_t want = room < kReadChunk ? static_cast<std::size_t>(room) + 1 : kReadChunk;
      const la_ssize_t n = archive_read_data(a, scratch_.data(), want);
      if (n < 0) return ReadResult::failed;
      if (n == 0) return ReadResult::complete;
      if (!decided || keep_all) kept.append(scratch_.data(), static_cast<std::size_t>(n));
      if (static_cast<std::uint64_t>(n) > room) return ReadResult::over_budget;
      budget_.expanded_bytes += static_cast<std::uint64_t>(n);
      if (!decided && kept.size() >= kSniffBytes) {
        decided = true;
        const FileKind kind = sniff(kept);
        keep_all =
            is_archive(kind) || kind == FileKind::ole_compound || equals_nocase(name, "[Content_Types].xml");
      }
    }
  }

  void exhaust(const std::string& path, std::string what) {
    report(kArchiveLimit, path + ": " + what);
    budget_.exhausted = std::move(what);
  }

  void archive_failed(const std::string& path, std::string_view name, FileKind kind,
                      const std::string& message, bool saw_content, bool cut) {
    if (mentions_encryption(message)) {
      report(kEncrypted, path + ": " + message);
      return;
    }
    if (cut) return;
    if ((kind == FileKind::gzip || kind == FileKind::tar) && saw_content) return;
    if (!has_archive_extension(name)) return;
    report(kUnreadable, path + ": unreadable " + std::string(to_string(kind)) + " (" + message + ")");
  }

  struct Hit {
    std::string_view rule;
    std::string detail;
    std::size_t more = 0;
  };

  const AttachmentLimits& limits_;
  MessageBudget& budget_;
  std::vector<Hit> hits_;
  std::string scratch_;
};

}  // namespace

Findings check_attachments(const ParsedMessage& message, const AttachmentLimits& limits) {
  Findings findings;
  MessageBudget budget;
  for (const Part& part : message.parts) {
    const FileKind kind = sniff(part.data);
    const bool binary = kind != FileKind::unknown && kind != FileKind::html && kind != FileKind::pdf;
    if (!part.attachment && !binary) continue;
    PartScan scan(limits, budget);
    scan.scan(part, kind);
    scan.add_to(findings);
  }
  return findings;
}

}  // namespace mxgate::filter
