#include "dns/wire.hpp"

#include <array>

namespace mxgate::dns::wire {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool plain(std::uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

void append_label_byte(std::string& out, std::uint8_t c) {
  c = static_cast<std::uint8_t>(lower(static_cast<char>(c)));
  if (plain(c)) {
    out.push_back(static_cast<char>(c));
    return;
  }
  out.push_back('\\');
  out.push_back(static_cast<char>('0' + c / 100));
  out.push_back(static_cast<char>('0' + c / 10 % 10));
  out.push_back(static_cast<char>('0' + c % 10));
}

}  // namespace

Result<std::string> read_name(Bytes rdata, std::size_t& offset) {
  std::string text;
  std::size_t pos = offset;
  std::size_t wire_length = 0;
  for (;;) {
    if (pos >= rdata.size()) {
      return make_error("name runs past the end of the rdata");
    }
    const std::size_t length = rdata[pos];
    if ((length & 0xC0) != 0) {
      return make_error("compressed or extended label type in rdata name");
    }
    wire_length += 1 + length;
    if (wire_length > kMaxNameLength) {
      return make_error("name longer than 255 octets");
    }
    ++pos;
    if (length == 0) {
      break;
    }
    if (rdata.size() - pos < length) {
      return make_error("label runs past the end of the rdata");
    }
    if (!text.empty()) {
      text.push_back('.');
    }
    for (std::size_t i = 0; i < length; ++i) {
      append_label_byte(text, rdata[pos + i]);
    }
    pos += length;
  }
  offset = pos;
  return text;
}

Result<MxRecord> parse_mx(Bytes rdata) {
  if (rdata.size() < 3) {
    return make_error("MX rdata shorter than 3 octets");
  }
  MxRecord mx;
  mx.preference = static_cast<std::uint16_t>(rdata[0] << 8 | rdata[1]);
  std::size_t offset = 2;
  auto host = read_name(rdata, offset);
  if (!host) {
    return make_error("MX rdata: " + host.error());
  }
  if (offset != rdata.size()) {
    return make_error("MX rdata has trailing octets");
  }
  mx.host = std::move(host.value());
  return mx;
}

Result<asio::ip::address> parse_a(Bytes rdata) {
  if (rdata.size() != 4) {
    return make_error("A rdata is " + std::to_string(rdata.size()) + " octets, not 4");
  }
  asio::ip::address_v4::bytes_type bytes{};
  std::copy(rdata.begin(), rdata.end(), bytes.begin());
  return asio::ip::address(asio::ip::address_v4(bytes));
}

Result<asio::ip::address> parse_aaaa(Bytes rdata) {
  if (rdata.size() != 16) {
    return make_error("AAAA rdata is " + std::to_string(rdata.size()) + " octets, not 16");
  }
  asio::ip::address_v6::bytes_type bytes{};
  std::copy(rdata.begin(), rdata.end(), bytes.begin());
  return asio::ip::address(asio::ip::address_v6(bytes));
}

Result<TlsaRecord> parse_tlsa(Bytes rdata) {
  // RFC 6698 section 2.1: three one-octet fields and the association data;
  // an empty association cannot match anything, so it is malformed.
  if (rdata.size() < 4) {
    return make_error("TLSA rdata shorter than 4 octets");
  }
  TlsaRecord tlsa;
  tlsa.usage = rdata[0];
  tlsa.selector = rdata[1];
  tlsa.matching_type = rdata[2];
  tlsa.data.assign(rdata.begin() + 3, rdata.end());
  return tlsa;
}

Result<std::string> parse_txt(Bytes rdata) {
  // RFC 1035 section 3.3.14: one or more <character-string>s, each a length
  // octet and that many octets.
  if (rdata.empty()) {
    return make_error("TXT rdata is empty");
  }
  std::string text;
  std::size_t offset = 0;
  while (offset < rdata.size()) {
    const std::size_t length = rdata[offset];
    if (offset + 1 + length > rdata.size()) {
      return make_error("TXT character-string runs past the rdata");
    }
    text.append(reinterpret_cast<const char*>(rdata.data()) + offset + 1, length);
    offset += 1 + length;
  }
  return text;
}

std::string normalize_name(std::string_view name) {
  while (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  std::string out(name);
  for (char& c : out) {
    c = lower(c);
  }
  return out;
}

std::string tlsa_owner(std::uint16_t port, std::string_view host) {
  return "_" + std::to_string(port) + "._tcp." + normalize_name(host);
}

}  // namespace mxgate::dns::wire
