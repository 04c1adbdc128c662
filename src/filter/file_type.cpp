#include "filter/file_type.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace mxgate::filter {
namespace {

bool has_at(std::string_view bytes, std::size_t offset, std::string_view magic) {
  return offset <= bytes.size() && bytes.size() - offset >= magic.size() &&
         bytes.compare(offset, magic.size(), magic) == 0;
}

// Little-endian fields; the caller has checked the range.
std::uint16_t le16(std::string_view b, std::size_t at) {
  return static_cast<std::uint16_t>(static_cast<unsigned char>(b[at]) | static_cast<unsigned char>(b[at + 1])
                                                                            << 8);
}
std::uint32_t le32(std::string_view b, std::size_t at) {
  return static_cast<std::uint32_t>(le16(b, at)) | static_cast<std::uint32_t>(le16(b, at + 2)) << 16;
}

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (ascii_lower(s[i]) != prefix[i]) return false;
  }
  return true;
}

// MS-DOS header (the first 64 bytes of every MZ file).
bool is_pe(std::string_view b) {
  if (!has_at(b, 0, "MZ") || b.size() < 64) return false;
  const std::uint32_t e_lfanew = le32(b, 0x3C);
  if (e_lfanew <= b.size() - 4 && has_at(b, e_lfanew, std::string_view("PE\0\0", 4))) return true;
  // No PE signature where it should be: a truncated PE, a DOS program or an
  // NE/LE image.  Windows still runs those; text starting with "MZ" has ASCII
  // in these fields and fails.
  const std::uint16_t bytes_in_last_page = le16(b, 2);
  const std::uint16_t pages = le16(b, 4);
  const std::uint16_t header_paragraphs = le16(b, 8);
  return bytes_in_last_page < 512 && pages > 0 && header_paragraphs >= 2;
}

bool is_macho(std::string_view b) {
  static constexpr std::array<std::string_view, 6> kMagics = {
      std::string_view("\xFE\xED\xFA\xCE", 4), std::string_view("\xFE\xED\xFA\xCF", 4),
      std::string_view("\xCE\xFA\xED\xFE", 4), std::string_view("\xCF\xFA\xED\xFE", 4),
      std::string_view("\xCA\xFE\xBA\xBE", 4),  // fat Mach-O, or a Java class file
      std::string_view("\xCA\xFE\xBA\xBF", 4),  // fat Mach-O with 64-bit offsets
  };
  for (auto magic : kMagics) {
    if (has_at(b, 0, magic)) return true;
  }
  return false;
}

// POSIX.1-1988 header: "ustar" at 257; v7 archives only have the checksum at
// 148 (octal, summed over the block with the field itself taken as spaces).
bool is_tar(std::string_view b) {
  if (b.size() < 512) return false;
  if (has_at(b, 257, "ustar")) return true;
  std::uint32_t expected = 0;
  std::size_t digits = 0;
  for (std::size_t i = 148; i < 156; ++i) {
    const char c = b[i];
    if (c >= '0' && c <= '7') {
      expected = expected * 8 + static_cast<std::uint32_t>(c - '0');
      ++digits;
    } else if (c == ' ' && digits == 0) {
      continue;
    } else if (c == '\0' || c == ' ') {
      break;
    } else {
      return false;
    }
  }
  if (digits == 0 || b[0] == '\0') return false;
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < 512; ++i) {
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(b[i]);
  }
  return sum == expected;
}

// ISO 9660 volume descriptors ("CD001") and the ECMA-167 (UDF) volume
// recognition sequence start at sector 16 of 2048-byte sectors; a few
// descriptors precede the one that says UDF.
bool is_disc_image(std::string_view b) {
  for (std::size_t sector = 0; sector < 16; ++sector) {
    const std::size_t at = 0x8001 + sector * 2048;
    if (at >= b.size()) break;
    if (has_at(b, at, "CD001") || has_at(b, at, "NSR02") || has_at(b, at, "NSR03")) return true;
  }
  return false;
}

bool is_html(std::string_view b) {
  if (has_at(b, 0, "\xEF\xBB\xBF")) b.remove_prefix(3);
  std::size_t i = 0;
  while (i < b.size() && i < 1024 && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n')) ++i;
  b.remove_prefix(i);
  static constexpr std::array<std::string_view, 7> kStarts = {"<!doctype html", "<html",  "<head", "<body",
                                                              "<script",        "<title", "<meta"};
  for (auto start : kStarts) {
    if (starts_with_nocase(b, start)) return true;
  }
  return false;
}

}  // namespace

FileKind sniff(std::string_view bytes) {
  if (bytes.size() > kSniffBytes) bytes = bytes.substr(0, kSniffBytes);
  if (is_pe(bytes)) return FileKind::pe_executable;
  if (has_at(bytes, 0,
             "\x7F"
             "ELF"))
    return FileKind::elf_executable;
  if (is_macho(bytes)) return FileKind::macho_executable;
  if (has_at(bytes, 0, "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1")) return FileKind::ole_compound;
  if (has_at(bytes, 0, "PK\x03\x04") || has_at(bytes, 0, "PK\x05\x06") || has_at(bytes, 0, "PK\x07\x08")) {
    return FileKind::zip;
  }
  if (has_at(bytes, 0, std::string_view("Rar!\x1A\x07\x00", 7)) ||
      has_at(bytes, 0, std::string_view("Rar!\x1A\x07\x01\x00", 8))) {
    return FileKind::rar;
  }
  if (has_at(bytes, 0, "7z\xBC\xAF\x27\x1C")) return FileKind::seven_zip;
  if (has_at(bytes, 0, "\x1F\x8B\x08")) return FileKind::gzip;  // RFC 1952, deflate (the only method)
  // MS-SHLLINK 2.1: HeaderSize 0x4C and LinkCLSID 00021401-0000-0000-C000-000000000046.
  if (has_at(bytes, 0,
             std::string_view(
                 "\x4C\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xC0\x00\x00\x00\x00\x00\x00\x46", 20))) {
    return FileKind::windows_shortcut;
  }
  if (has_at(bytes, 0, "%PDF-")) return FileKind::pdf;
  if (is_tar(bytes)) return FileKind::tar;
  if (is_disc_image(bytes)) return FileKind::iso9660;
  // PDF readers accept the header anywhere in the first KiB.
  if (bytes.substr(0, 1024).find("%PDF-") != std::string_view::npos) return FileKind::pdf;
  if (is_html(bytes)) return FileKind::html;
  return FileKind::unknown;
}

std::string_view to_string(FileKind kind) {
  switch (kind) {
    case FileKind::unknown:
      return "unknown";
    case FileKind::pe_executable:
      return "PE executable";
    case FileKind::elf_executable:
      return "ELF executable";
    case FileKind::macho_executable:
      return "Mach-O executable";
    case FileKind::ole_compound:
      return "OLE compound file";
    case FileKind::zip:
      return "zip archive";
    case FileKind::rar:
      return "RAR archive";
    case FileKind::seven_zip:
      return "7z archive";
    case FileKind::gzip:
      return "gzip stream";
    case FileKind::tar:
      return "tar archive";
    case FileKind::iso9660:
      return "disc image";
    case FileKind::windows_shortcut:
      return "Windows shortcut";
    case FileKind::pdf:
      return "PDF document";
    case FileKind::html:
      return "HTML document";
  }
  return "unknown";
}

bool is_executable(FileKind kind) {
  return kind == FileKind::pe_executable || kind == FileKind::elf_executable ||
         kind == FileKind::macho_executable;
}

bool is_archive(FileKind kind) {
  switch (kind) {
    case FileKind::zip:
    case FileKind::rar:
    case FileKind::seven_zip:
    case FileKind::gzip:
    case FileKind::tar:
    case FileKind::iso9660:
      return true;
    default:
      return false;
  }
}

// ---- MS-CFB ----------------------------------------------------------------

namespace {

constexpr std::uint32_t kMaxRegularSector = 0xFFFFFFFA;  // MAXREGSECT
constexpr std::size_t kHeaderDifatEntries = 109;
constexpr std::size_t kDirectoryEntrySize = 128;

// MS-CFB 2.6.1 object types.
enum : unsigned char { kObjectStorage = 1, kObjectStream = 2 };

class CompoundFile {
 public:
  explicit CompoundFile(std::string_view bytes) : bytes_(bytes) {}

  bool open() {
    if (bytes_.size() < 512 || !has_at(bytes_, 0, "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1")) return false;
    // MS-CFB 2.2: version 3 uses 512-byte sectors, version 4 4096-byte ones.
    // The pairing is not enforced: a reader that accepts either costs nothing.
    const std::uint16_t shift = le16(bytes_, 0x1E);
    if (shift != 9 && shift != 12) return false;
    sector_size_ = std::size_t{1} << shift;
    // Sector n starts at (n + 1) * sector_size; a short last sector is kept.
    sector_count_ = bytes_.size() > sector_size_ ? (bytes_.size() - 1) / sector_size_ : 0;
    load_fat_sector_list();
    return true;
  }

  // Calls visit(entry) for every entry of the directory stream, in order;
  // stops early when visit returns true.
  template <class Visit>
  bool any_directory_entry(Visit visit) const {
    std::vector<bool> seen(sector_count_, false);
    std::uint32_t sector = le32(bytes_, 0x30);
    while (sector < sector_count_ && !seen[sector]) {
      seen[sector] = true;
      const std::string_view data = sector_bytes(sector);
      for (std::size_t at = 0; at + kDirectoryEntrySize <= data.size(); at += kDirectoryEntrySize) {
        if (visit(data.substr(at, kDirectoryEntrySize))) return true;
      }
      const auto next = next_sector(sector);
      if (!next) break;
      sector = *next;
    }
    return false;
  }

 private:
  std::string_view sector_bytes(std::uint32_t sector) const {
    const std::size_t offset = (static_cast<std::size_t>(sector) + 1) * sector_size_;
    if (offset >= bytes_.size()) return {};
    return bytes_.substr(offset, sector_size_);
  }

  // MS-CFB 2.5: the FAT's sector numbers are the header's 109 DIFAT entries,
  // then the DIFAT sectors, each ending in the number of the next one.
  void load_fat_sector_list() {
    const std::uint32_t fat_sectors = le32(bytes_, 0x2C);
    const std::size_t wanted = std::min<std::size_t>(fat_sectors, sector_count_);
    auto take = [&](std::uint32_t sector) {
      if (fat_.size() < wanted && sector <= kMaxRegularSector) fat_.push_back(sector);
    };
    for (std::size_t i = 0; i < kHeaderDifatEntries; ++i) take(le32(bytes_, 0x4C + 4 * i));
    std::vector<bool> seen(sector_count_, false);
    std::uint32_t difat = le32(bytes_, 0x44);
    const std::uint32_t difat_count = le32(bytes_, 0x48);
    for (std::uint32_t n = 0; n < difat_count && fat_.size() < wanted; ++n) {
      if (difat >= sector_count_ || seen[difat]) break;
      seen[difat] = true;
      const std::string_view data = sector_bytes(difat);
      if (data.size() < sector_size_) break;
      for (std::size_t at = 0; at + 4 < sector_size_; at += 4) take(le32(data, at));
      difat = le32(data, sector_size_ - 4);
    }
  }

  // The FAT entry of a sector: the next sector of its chain, or nothing at
  // the end of the chain or when the FAT does not reach that far.
  std::optional<std::uint32_t> next_sector(std::uint32_t sector) const {
    const std::size_t per_sector = sector_size_ / 4;
    const std::size_t index = sector / per_sector;
    if (index >= fat_.size()) return std::nullopt;
    const std::string_view data = sector_bytes(fat_[index]);
    const std::size_t at = (sector % per_sector) * 4;
    if (at + 4 > data.size()) return std::nullopt;
    const std::uint32_t next = le32(data, at);
    if (next > kMaxRegularSector) return std::nullopt;
    return next;
  }

  std::string_view bytes_;
  std::size_t sector_size_ = 512;
  std::size_t sector_count_ = 0;
  std::vector<std::uint32_t> fat_;  // sector numbers holding the FAT, in order
};

// MS-CFB 2.6.1: the name is UTF-16LE, at most 31 characters and a NUL, its
// length in bytes (NUL included) at 0x40.  CFB compares names upper-cased.
bool entry_name_is(std::string_view entry, std::string_view ascii_name) {
  std::size_t units = le16(entry, 0x40) / 2;
  if (units == 0 || units > 32) return false;
  --units;  // the terminating NUL
  if (units != ascii_name.size()) return false;
  for (std::size_t i = 0; i < units; ++i) {
    const std::uint16_t unit = le16(entry, 2 * i);
    if (unit > 0x7F || ascii_lower(static_cast<char>(unit)) != ascii_lower(ascii_name[i])) return false;
  }
  return true;
}

}  // namespace

bool ole_has_vba_project(std::string_view cfb_bytes) {
  CompoundFile file(cfb_bytes);
  if (!file.open()) return false;
  return file.any_directory_entry([](std::string_view entry) {
    const auto type = static_cast<unsigned char>(entry[0x42]);
    if (type == kObjectStorage) {
      return entry_name_is(entry, "VBA") || entry_name_is(entry, "_VBA_PROJECT_CUR") ||
             entry_name_is(entry, "Macros");
    }
    if (type == kObjectStream) return entry_name_is(entry, "_VBA_PROJECT");
    return false;
  });
}

}  // namespace mxgate::filter
