// What an attachment really is, from its bytes.  Mail clients and the
// recipient's desktop decide what to do with a file from its name or its
// content, never from the sender's Content-Type, so the attachment policy
// (filter/attachment_policy.hpp) looks at magic numbers instead.  Everything
// here is a pure function on a byte string: no I/O, no allocation beyond the
// sector bookkeeping of a compound file, every read bounds-checked, every
// loop bounded by the input size, so the same entry points serve the unit
// tests and a fuzzer.
//
// Limits and choices:
// - A PE is "MZ" with "PE\0\0" at e_lfanew.  An "MZ" file whose e_lfanew is
//   past the data (cut by a size limit) or whose signature is missing (a DOS
//   or NE/LE program) still counts when its DOS header is plausible (bytes in
//   the last page < 512, at least one page, header of at least two
//   paragraphs): text that merely starts with "MZ" fails those checks.
// - cafebabe is both a Mach-O universal binary and a Java class file; both run
//   code, so both are macho_executable.
// - iso9660 also covers UDF-only images (an ECMA-167 volume recognition
//   sequence "BEA01" followed by "NSR02"/"NSR03"): both are disc images that
//   Windows mounts with a double click.
// - tar is the POSIX/GNU "ustar" magic or, for v7 archives without it, a
//   header block whose checksum adds up.
// - html is a guess from the first tags after whitespace and a BOM; it only
//   serves to tell documents from binary content.
#pragma once

#include <cstddef>
#include <string_view>

namespace mxgate::filter {

enum class FileKind {
  unknown,
  pe_executable,
  elf_executable,
  macho_executable,
  ole_compound,  // MS-CFB compound file: .doc .xls .ppt .msi .msg, vbaProject.bin
  zip,           // also .docx/.xlsx/.odt/.jar: the container decides, not the name
  rar,
  seven_zip,
  gzip,
  tar,
  iso9660,           // ISO 9660 or UDF disc image
  windows_shortcut,  // MS-SHLLINK .lnk
  pdf,
  html,
};

// sniff() looks at no more than this prefix: the ISO 9660 and UDF
// descriptors live at 32 KiB and a little after.
inline constexpr std::size_t kSniffBytes = std::size_t{64} * 1024;

// The kind the first bytes announce; unknown when none matches.
FileKind sniff(std::string_view bytes);

// "PE executable", "zip archive", ... for finding details.
std::string_view to_string(FileKind kind);

// Kinds that run as native or JVM code when opened.
bool is_executable(FileKind kind);

// Kinds the attachment policy lists with libarchive.
bool is_archive(FileKind kind);

// Whether a compound file holds a VBA project.  Follows MS-CFB: header,
// sector size, the FAT (header DIFAT plus the DIFAT sector chain), then the
// directory stream's FAT chain; every allocated directory entry is looked at,
// not only the ones reachable from the root's red-black tree, because Office
// repairs a damaged tree and an entry hidden from it must still count.  True
// when an entry is a storage named "VBA" (MS-OVBA's project storage, in .doc,
// .xls and vbaProject.bin alike), "_VBA_PROJECT_CUR" (Excel 97-2003) or
// "Macros" (Word 97-2003), or a stream named "_VBA_PROJECT"; names compare
// case-insensitively as CFB names do.  False for anything that is not a
// readable compound file.  Not seen: PowerPoint 97-2003 keeps its project
// compressed inside the "PowerPoint Document" stream, and Excel 4.0 (XLM)
// macro sheets live in the Workbook stream.
bool ole_has_vba_project(std::string_view cfb_bytes);

}  // namespace mxgate::filter
