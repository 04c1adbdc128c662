// DKIM verification (src/sender_auth/dkim.hpp).
//
//   - The published example of RFC 8463 Appendix A (one message signed with
//     ed25519-sha256 and with rsa-sha256, and the two key records) passes,
//     and fails once changed.
//   - The canonicalization example of RFC 6376 section 3.4.5, tag-list edge
//     cases, signature and key record parsing, header splitting and
//     bottom-up selection with repeated and oversigned names.
//   - Signatures made here (TestSigner: OpenSSL keys, this module's own
//     canonicalization) for what the RFC example cannot show: x=, l=, t=s,
//     t=y, key sizes around RFC 8301's 1024 bits, the header field limit.
//   - An oracle: python3-dkim (Debian package python3-dkim, run with
//     /usr/bin/python3 or $MXGATE_PYTHON3) generates an RSA-2048 and an
//     Ed25519 key and signs 52 varied messages; each must pass here, and
//     fail once a body byte or a signed header byte is flipped.  Without
//     python3-dkim the test fails, it is not skipped.
//   - verify_dkim() against an in-memory dns::Resolver with fixed TXT
//     answers (the real resolver is tested against nsd elsewhere).
#include "sender_auth/dkim.hpp"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::sender_auth {
namespace {

using Clock = std::chrono::system_clock;
using std::chrono::seconds;

// 2026-10-02 03:00:00 UTC: after the RFC 8463 example's t=1528637909.
constexpr std::int64_t kNowSeconds = 1790910000;
const Clock::time_point kNow{seconds{kNowSeconds}};

// Test texts are written with "\n"; messages have CRLF.
std::string crlf(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '\n') out += '\r';
    out += c;
  }
  return out;
}

std::string replace_first(std::string text, std::string_view from, std::string_view to) {
  const std::size_t at = text.find(from);
  if (at == std::string::npos) {
    ADD_FAILURE() << "no \"" << from << "\" in the text";
    return text;
  }
  text.replace(at, from.size(), to);
  return text;
}

// The value of the n-th DKIM-Signature field from the top.
std::string signature_value(std::string_view message, std::size_t n = 0) {
  const MessageParts parts = split_message(message);
  for (const HeaderField& field : parts.fields) {
    if (field.name == "DKIM-Signature" || field.name == "dkim-signature") {
      if (n-- == 0) return std::string(field.raw.substr(field.raw.find(':') + 1));
    }
  }
  ADD_FAILURE() << "no DKIM-Signature field";
  return {};
}

// The value of a header field (after the first colon).
std::string_view value_of(std::string_view raw) { return raw.substr(raw.find(':') + 1); }

DkimVerdict verify_nth(std::string_view message, std::string_view key_record, std::size_t n = 0,
                       Clock::time_point now = kNow) {
  return verify_with_key(message, signature_value(message, n), key_record, now);
}

std::string describe(const DkimVerdict& v) {
  return std::string(to_string(v.result)) + " (" + v.reason + ") d=" + v.domain + " s=" + v.selector;
}

// ---- Keys and a signer for signatures made here ----

struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using UniquePkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct MdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

std::string base64(const unsigned char* data, std::size_t size) {
  std::string out(4 * ((size + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(size));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string sha256_base64(std::string_view data) {
  unsigned char digest[32];
  unsigned int size = 0;
  EXPECT_EQ(EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr), 1);
  return base64(digest, size);
}

struct TestKey {
  KeyType type = KeyType::rsa;
  std::shared_ptr<EVP_PKEY> pkey;
  std::string record;        // "v=DKIM1; k=...; p=..."
  std::string pkcs1_record;  // RSA only: p= as a bare RSAPublicKey
};

TestKey make_key(KeyType type, unsigned rsa_bits = 2048) {
  TestKey key;
  key.type = type;
  EVP_PKEY* raw = type == KeyType::rsa
                      ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(rsa_bits))
                      : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (raw == nullptr) {
    ADD_FAILURE() << "key generation failed";
    return key;
  }
  key.pkey.reset(raw, EVP_PKEY_free);
  if (type == KeyType::ed25519) {
    unsigned char pub[32];
    size_t size = sizeof pub;
    EXPECT_EQ(EVP_PKEY_get_raw_public_key(raw, pub, &size), 1);
    key.record = "v=DKIM1; k=ed25519; p=" + base64(pub, size);
    return key;
  }
  unsigned char* der = nullptr;
  int size = i2d_PUBKEY(raw, &der);
  key.record = "v=DKIM1; k=rsa; p=" + base64(der, static_cast<std::size_t>(size));
  OPENSSL_free(der);
  der = nullptr;
  size = i2d_PublicKey(raw, &der);
  key.pkcs1_record = "v=DKIM1; p=" + base64(der, static_cast<std::size_t>(size));
  OPENSSL_free(der);
  return key;
}

const TestKey& ed_key() {
  static const TestKey key = make_key(KeyType::ed25519);
  return key;
}
const TestKey& rsa_key() {
  static const TestKey key = make_key(KeyType::rsa, 2048);
  return key;
}

std::string_view canonicalization_name(Canonicalization c) {
  return c == Canonicalization::simple ? "simple" : "relaxed";
}

// Signs a message the way a signer does (RFC 6376 section 5), with this
// module's canonicalization, and returns it with the DKIM-Signature field
// prepended (b= last, on the same line).
struct TestSigner {
  const TestKey* key = nullptr;
  std::string domain = "example.com";
  std::string selector = "sel";
  std::string headers = "from:to:subject";
  Canonicalization header = Canonicalization::relaxed;
  Canonicalization body = Canonicalization::relaxed;
  std::optional<std::uint64_t> length{};  // l=; the body hash covers min(l, body) octets
  std::string extra{};                    // more tags, each followed by "; "

  std::string sign(std::string_view message) const {
    std::string canonical = canonicalize_body(split_message(message).body, body);
    if (length && *length < canonical.size()) canonical.resize(*length);
    std::string value =
        " v=1; a=" + std::string(key->type == KeyType::rsa ? "rsa-sha256" : "ed25519-sha256") +
        "; c=" + std::string(canonicalization_name(header)) + "/" + std::string(canonicalization_name(body)) +
        "; d=" + domain + "; s=" + selector + "; h=" + headers + "; ";
    if (length) value += "l=" + std::to_string(*length) + "; ";
    value += extra + "bh=" + sha256_base64(canonical) + "; b=";
    const std::string unsigned_message = "DKIM-Signature:" + value + "\r\n" + std::string(message);
    const MessageParts parts = split_message(unsigned_message);
    std::vector<std::string> names;
    std::string list = headers;
    for (std::size_t at = 0; at <= list.size();) {
      const std::size_t colon = std::min(list.find(':', at), list.size());
      std::string name = list.substr(at, colon - at);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      names.push_back(name);
      at = colon + 1;
    }
    std::string data;
    for (const std::size_t i : select_headers(parts, names, 0))
      data += canonicalize_header(parts.fields[i].raw, header);
    std::string own = canonicalize_header(parts.fields[0].raw, header);
    own.resize(own.size() - 2);
    data += own;

    std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
    std::string signed_data = data;
    const EVP_MD* md = EVP_sha256();
    if (key->type == KeyType::ed25519) {
      unsigned char digest[32];
      unsigned int size = 0;
      EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
      signed_data.assign(reinterpret_cast<const char*>(digest), size);
      md = nullptr;
    }
    EXPECT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key->pkey.get()), 1);
    size_t size = 0;
    const auto* in = reinterpret_cast<const unsigned char*>(signed_data.data());
    EXPECT_EQ(EVP_DigestSign(ctx.get(), nullptr, &size, in, signed_data.size()), 1);
    std::vector<unsigned char> signature(size);
    EXPECT_EQ(EVP_DigestSign(ctx.get(), signature.data(), &size, in, signed_data.size()), 1);
    return "DKIM-Signature:" + value + base64(signature.data(), size) + "\r\n" + std::string(message);
  }
};

const std::string kPlain = crlf(
    "From: Alice <alice@example.com>\n"
    "To: Bob <bob@example.org>\n"
    "Subject: Hello\n"
    "Date: Thu, 01 Oct 2026 12:00:00 +0000\n"
    "Message-ID: <1@example.com>\n"
    "\n"
    "Hi Bob.\n"
    "\n"
    "See you.\n");

// ---- RFC 8463 Appendix A ----

// A.3: the signed message, as published.
const std::string kRfc8463Message = crlf(
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\n"
    " d=football.example.com; i=@football.example.com;\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\n"
    " subject : date : message-id : from : subject : date;\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\n"
    " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\n"
    " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\n"
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\n"
    " d=football.example.com; i=@football.example.com;\n"
    " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\n"
    " date : message-id : from : subject : date;\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\n"
    " b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\n"
    " DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\n"
    " dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\n"
    "From: Joe SixPack <joe@football.example.com>\n"
    "To: Suzie Q <suzie@shopping.example.net>\n"
    "Subject: Is dinner ready?\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\n"
    "\n"
    "Hi.\n"
    "\n"
    "We lost the game.  Are you hungry yet?\n"
    "\n"
    "Joe.\n"
    "\n");

// A.2: the key records (brisbane._domainkey and test._domainkey of
// football.example.com), each record's strings joined.  The RSA key has
// 1024 bits, the smallest RFC 8301 accepts.
constexpr std::string_view kRfc8463Ed25519Record =
    "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
constexpr std::string_view kRfc8463RsaRecord =
    "v=DKIM1; k=rsa; "
    "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/"
    "J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+"
    "2kryOTIKT+l/K4w3QIDAQAB";

constexpr std::size_t kEd = 0;   // the ed25519 signature is the first field
constexpr std::size_t kRsa = 1;  // the rsa one the second

TEST(DkimRfc8463, BothSignaturesOfTheExamplePass) {
  const DkimVerdict ed = verify_nth(kRfc8463Message, kRfc8463Ed25519Record, kEd);
  EXPECT_EQ(ed.result, DkimResult::pass) << describe(ed);
  EXPECT_EQ(ed.domain, "football.example.com");
  EXPECT_EQ(ed.selector, "brisbane");
  EXPECT_EQ(ed.algorithm, "ed25519-sha256");
  EXPECT_EQ(ed.identity, "@football.example.com");
  EXPECT_EQ(ed.b_prefix, "/gCrinpc");
  EXPECT_FALSE(ed.testing);

  const DkimVerdict rsa = verify_nth(kRfc8463Message, kRfc8463RsaRecord, kRsa);
  EXPECT_EQ(rsa.result, DkimResult::pass) << describe(rsa);
  EXPECT_EQ(rsa.selector, "test");
  EXPECT_EQ(rsa.algorithm, "rsa-sha256");
  EXPECT_EQ(rsa.b_prefix, "F45dVWDf");
}

TEST(DkimRfc8463, Ed25519SignsTheSha256OfTheHeaderData) {
  // What the ed25519 signature covers (RFC 8463 section 3): the relaxed
  // fields h= selects from the bottom up (From, Subject and Date listed
  // twice: the second time contributes nothing), then the signature's own
  // field with b= emptied and no final CRLF.  The signature passes only if
  // Ed25519 is applied to SHA-256 of exactly this.
  const MessageParts parts = split_message(kRfc8463Message);
  ASSERT_EQ(parts.fields.size(), 7u);
  auto sig = parse_signature(value_of(parts.fields[0].raw));
  ASSERT_TRUE(sig.ok()) << sig.error();
  EXPECT_EQ(sig->signed_headers, (std::vector<std::string>{"from", "to", "subject", "date", "message-id",
                                                           "from", "subject", "date"}));
  EXPECT_EQ(select_headers(parts, sig->signed_headers, 0), (std::vector<std::size_t>{2, 3, 4, 5, 6}));
  EXPECT_EQ(canonicalize_header(parts.fields[2].raw, Canonicalization::relaxed),
            "from:Joe SixPack <joe@football.example.com>\r\n");
  std::string own(parts.fields[0].raw);
  const std::size_t value_at = own.find(':') + 1;
  own.erase(value_at + sig->b_region_begin, sig->b_region_end - sig->b_region_begin);
  EXPECT_EQ(
      canonicalize_header(own, Canonicalization::relaxed),
      "dkim-signature:v=1; a=ed25519-sha256; c=relaxed/relaxed; d=football.example.com; "
      "i=@football.example.com; q=dns/txt; s=brisbane; t=1528637909; h=from : to : subject : "
      "date : message-id : from : subject : date; bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=\r\n");
}

TEST(DkimRfc8463, BodyTamperingFailsTheBodyHash) {
  const std::string changed = replace_first(kRfc8463Message, "hungry", "angry");
  for (const auto& [n, record] :
       {std::pair{kEd, kRfc8463Ed25519Record}, std::pair{kRsa, kRfc8463RsaRecord}}) {
    const DkimVerdict v = verify_nth(changed, record, n);
    EXPECT_EQ(v.result, DkimResult::fail) << describe(v);
    EXPECT_EQ(v.reason, "body hash did not verify");
  }
  // White space changes inside a line do not matter to relaxed.
  const std::string spaced = replace_first(kRfc8463Message, "game.  Are", "game.\t  Are");
  EXPECT_EQ(verify_nth(spaced, kRfc8463Ed25519Record, kEd).result, DkimResult::pass);
  // Neither do more empty lines at the end.
  EXPECT_EQ(verify_nth(kRfc8463Message + "\r\n\r\n", kRfc8463RsaRecord, kRsa).result, DkimResult::pass);
}

TEST(DkimRfc8463, SignedHeaderTamperingFailsTheSignature) {
  const std::string changed = replace_first(kRfc8463Message, "dinner", "lunch");
  for (const auto& [n, record] :
       {std::pair{kEd, kRfc8463Ed25519Record}, std::pair{kRsa, kRfc8463RsaRecord}}) {
    const DkimVerdict v = verify_nth(changed, record, n);
    EXPECT_EQ(v.result, DkimResult::fail) << describe(v);
    EXPECT_EQ(v.reason, "signature did not verify");
  }
  // Relaxed header canonicalization ignores case of names and white space.
  const std::string relaxed = replace_first(kRfc8463Message, "Subject: Is dinner", "SUBJECT :  Is \t dinner");
  EXPECT_EQ(verify_nth(relaxed, kRfc8463Ed25519Record, kEd).result, DkimResult::pass);
}

TEST(DkimRfc8463, ReceivedAndUnsignedFieldsAddedStillPass) {
  const std::string received =
      crlf(
          "Received: from mail.football.example.com (mail.football.example.com [192.0.2.1])\n"
          "\tby mx.example.test (mxgate) with ESMTPS id Q0000001\n"
          "\tfor <suzie@shopping.example.net>; Thu, 01 Oct 2026 12:00:00 +0000\n") +
      kRfc8463Message;
  EXPECT_EQ(verify_nth(received, kRfc8463Ed25519Record, kEd).result, DkimResult::pass);
  EXPECT_EQ(verify_nth(received, kRfc8463RsaRecord, kRsa).result, DkimResult::pass);
  const std::string mailer = replace_first(kRfc8463Message, "Message-ID:", "X-Mailer: any\r\nMessage-ID:");
  EXPECT_EQ(verify_nth(mailer, kRfc8463Ed25519Record, kEd).result, DkimResult::pass);
}

TEST(DkimRfc8463, OversignedFromAddedOnTopFails) {
  // h= names From twice, so a second From (anywhere) is covered: added on
  // top it is selected first and the signature breaks.
  const std::string changed =
      replace_first(kRfc8463Message, "From: Joe", "From: Mallory <m@evil.example>\r\nFrom: Joe");
  EXPECT_EQ(verify_nth(changed, kRfc8463Ed25519Record, kEd).result, DkimResult::fail);
  EXPECT_EQ(verify_nth(changed, kRfc8463RsaRecord, kRsa).result, DkimResult::fail);
  // Subject also appears twice in h=: a second one at the bottom breaks it too.
  const std::string subject = replace_first(kRfc8463Message, "Message-ID:", "Subject: win\r\nMessage-ID:");
  EXPECT_EQ(verify_nth(subject, kRfc8463Ed25519Record, kEd).result, DkimResult::fail);
}

TEST(DkimRfc8463, WrongKeysAndRevokedKeys) {
  // The other signature's key type: permerror (section 6.1.2).
  const DkimVerdict swapped = verify_nth(kRfc8463Message, kRfc8463RsaRecord, kEd);
  EXPECT_EQ(swapped.result, DkimResult::permerror) << describe(swapped);
  EXPECT_EQ(swapped.reason, "key type does not match a=");
  // Another Ed25519 key: the signature fails.
  const DkimVerdict foreign = verify_nth(kRfc8463Message, ed_key().record, kEd);
  EXPECT_EQ(foreign.result, DkimResult::fail) << describe(foreign);
  EXPECT_EQ(foreign.reason, "signature did not verify");
  // Revoked: empty p=.
  const DkimVerdict revoked = verify_nth(kRfc8463Message, "v=DKIM1; k=ed25519; p=", kEd);
  EXPECT_EQ(revoked.result, DkimResult::permerror);
  EXPECT_EQ(revoked.reason, "key revoked");
  // A key record that does not parse.
  EXPECT_EQ(verify_nth(kRfc8463Message, "v=DKIM1; p=AQAB; p=AQAB", kRsa).result, DkimResult::permerror);
  // p= that is base64 but no key.
  EXPECT_EQ(verify_nth(kRfc8463Message, "v=DKIM1; k=rsa; p=AQAB", kRsa).result, DkimResult::permerror);
  EXPECT_EQ(verify_nth(kRfc8463Message, "v=DKIM1; k=ed25519; p=AQAB", kEd).result, DkimResult::permerror);
}

TEST(DkimRfc8463, RsaSha1IsRefused) {
  // RFC 8301 section 3.1: rsa-sha1 signatures are not valid.  The
  // signature is refused before any key or hash is looked at.
  const std::string sha1 = replace_first(kRfc8463Message, "a=rsa-sha256", "a=rsa-sha1");
  const DkimVerdict v = verify_nth(sha1, kRfc8463RsaRecord, kRsa);
  EXPECT_EQ(v.result, DkimResult::permerror);
  EXPECT_EQ(v.reason, "rsa-sha1 is not accepted (RFC 8301)");
  EXPECT_EQ(v.algorithm, "rsa-sha1");
  EXPECT_EQ(v.domain, "football.example.com");
  EXPECT_EQ(v.selector, "test");
}

TEST(DkimRfc8463, KeyPolicyTags) {
  const std::string ed(kRfc8463Ed25519Record);
  EXPECT_EQ(verify_nth(kRfc8463Message, ed + "; h=sha256; s=email; n=notes", kEd).result, DkimResult::pass);
  EXPECT_EQ(verify_nth(kRfc8463Message, ed + "; h=sha1", kEd).result, DkimResult::permerror);
  EXPECT_EQ(verify_nth(kRfc8463Message, ed + "; s=tlsrpt", kEd).result, DkimResult::permerror);
  // t=s: i= is exactly d= here, so strict keys still pass.
  EXPECT_EQ(verify_nth(kRfc8463Message, ed + "; t=s", kEd).result, DkimResult::pass);
  const DkimVerdict testing = verify_nth(kRfc8463Message, ed + "; t=y", kEd);
  EXPECT_EQ(testing.result, DkimResult::pass);
  EXPECT_TRUE(testing.testing);
  EXPECT_EQ(testing.reason, "key in testing mode");
  const DkimVerdict tampered =
      verify_nth(replace_first(kRfc8463Message, "dinner", "lunch"), ed + "; t=y", kEd);
  EXPECT_EQ(tampered.result, DkimResult::fail);
  EXPECT_TRUE(tampered.testing);
}

TEST(DkimRfc8463, SignatureFieldNotInTheMessage) {
  const DkimVerdict v = verify_with_key(
      kRfc8463Message, " v=1; a=rsa-sha256; d=example.com; s=x; h=from; bh=; b=", kRfc8463RsaRecord, kNow);
  EXPECT_EQ(v.result, DkimResult::permerror);
  EXPECT_EQ(v.reason, "DKIM-Signature field not in the message");
  EXPECT_EQ(v.domain, "example.com");
}

// ---- Canonicalization (RFC 6376 section 3.4) ----

TEST(DkimCanonicalization, Rfc6376Section345Example) {
  const std::string message = "A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
  const MessageParts parts = split_message(message);
  ASSERT_EQ(parts.fields.size(), 2u);
  std::string relaxed;
  std::string simple;
  for (const HeaderField& field : parts.fields) {
    relaxed += canonicalize_header(field.raw, Canonicalization::relaxed);
    simple += canonicalize_header(field.raw, Canonicalization::simple);
  }
  EXPECT_EQ(relaxed, "a:X\r\nb:Y Z\r\n");
  EXPECT_EQ(simple, "A: X\r\nB : Y\t\r\n\tZ  \r\n");
  EXPECT_EQ(canonicalize_body(parts.body, Canonicalization::relaxed), " C\r\nD E\r\n");
  EXPECT_EQ(canonicalize_body(parts.body, Canonicalization::simple), " C \r\nD \t E\r\n");
}

TEST(DkimCanonicalization, RelaxedHeaderEdgeCases) {
  const auto relaxed = [](std::string_view raw) {
    return canonicalize_header(raw, Canonicalization::relaxed);
  };
  EXPECT_EQ(relaxed("Subject:\r\n folded"), "subject:folded\r\n");
  EXPECT_EQ(relaxed("X-Empty:"), "x-empty:\r\n");
  EXPECT_EQ(relaxed("X-Empty:   \t "), "x-empty:\r\n");
  EXPECT_EQ(relaxed("Subject:\tTabbed\t  value\t"), "subject:Tabbed value\r\n");
  EXPECT_EQ(relaxed("Keywords:a,b"), "keywords:a,b\r\n");
  EXPECT_EQ(relaxed("To: a,\r\n\tb,\r\n  c"), "to:a, b, c\r\n");
  EXPECT_EQ(relaxed("To: a,\n b"), "to:a, b\r\n");  // bare LF line end
  EXPECT_EQ(relaxed("X-A: one: two"), "x-a:one: two\r\n");
  EXPECT_EQ(relaxed("X-Bytes: caf\xc3\xa9 \x01"), "x-bytes:caf\xc3\xa9 \x01\r\n");
}

TEST(DkimCanonicalization, SimpleHeaderKeepsEverything) {
  const auto simple = [](std::string_view raw) { return canonicalize_header(raw, Canonicalization::simple); };
  EXPECT_EQ(simple("SUBJECT :  x \r\n\ty  "), "SUBJECT :  x \r\n\ty  \r\n");
  EXPECT_EQ(simple("To: a,\n b"), "To: a,\r\n b\r\n");  // bare LF becomes CRLF
}

TEST(DkimCanonicalization, BodyEdgeCases) {
  const auto simple = [](std::string_view body) { return canonicalize_body(body, Canonicalization::simple); };
  const auto relaxed = [](std::string_view body) {
    return canonicalize_body(body, Canonicalization::relaxed);
  };
  // Empty body: simple is one CRLF, relaxed is nothing (section 3.4.3/3.4.4).
  EXPECT_EQ(simple(""), "\r\n");
  EXPECT_EQ(relaxed(""), "");
  EXPECT_EQ(simple("\r\n\r\n\r\n"), "\r\n");
  EXPECT_EQ(relaxed("\r\n\r\n\r\n"), "");
  // Lines of only white space: empty to relaxed, so dropped at the end.
  EXPECT_EQ(relaxed("   \r\n\t \r\n"), "");
  EXPECT_EQ(simple("   \r\n\t \r\n"), "   \r\n\t \r\n");
  EXPECT_EQ(relaxed("a\r\n  \r\nb\r\n \r\n\r\n"), "a\r\n\r\nb\r\n");
  EXPECT_EQ(simple("a\r\n  \r\nb\r\n \r\n\r\n"), "a\r\n  \r\nb\r\n \r\n");
  // No line end at the end: one is added (erratum 3133).
  EXPECT_EQ(simple("no end"), "no end\r\n");
  EXPECT_EQ(relaxed("no end  "), "no end\r\n");
  EXPECT_EQ(simple("a\r\n\r\nb"), "a\r\n\r\nb\r\n");
  // Leading white space stays (one SP in relaxed).
  EXPECT_EQ(relaxed(" \t lead\r\n"), " lead\r\n");
  // Bare LF line ends are line ends; a bare CR is data.
  EXPECT_EQ(simple("a\nb\n\n"), "a\r\nb\r\n");
  EXPECT_EQ(relaxed("a\rb \r\n"), "a\rb\r\n");
  // Empty lines in the middle stay.
  EXPECT_EQ(simple("a\r\n\r\n\r\nb\r\n"), "a\r\n\r\n\r\nb\r\n");
}

// ---- Tag lists (RFC 6376 section 3.2) ----

TEST(DkimTagList, NamesValuesAndRegions) {
  const std::string text = "v=1; a=rsa-sha256;b= abc\r\n def ;x=";
  auto tags = parse_tag_list(text);
  ASSERT_TRUE(tags.ok()) << tags.error();
  ASSERT_EQ(tags->size(), 4u);
  EXPECT_EQ((*tags)[0].name, "v");
  EXPECT_EQ((*tags)[0].value, "1");
  EXPECT_EQ((*tags)[1].value, "rsa-sha256");
  EXPECT_EQ((*tags)[2].name, "b");
  EXPECT_EQ((*tags)[2].value, "abc\r\n def");
  EXPECT_EQ(text.substr((*tags)[2].region_begin, (*tags)[2].region_end - (*tags)[2].region_begin),
            " abc\r\n def ");
  EXPECT_EQ((*tags)[3].name, "x");
  EXPECT_EQ((*tags)[3].value, "");
  EXPECT_EQ((*tags)[3].region_begin, text.size());
  EXPECT_EQ((*tags)[3].region_end, text.size());
}

TEST(DkimTagList, WhiteSpaceEverywhere) {
  auto tags = parse_tag_list(" \r\n\t v \t=\r\n 1 \t;\r\n\ta_b9 =  x y  ; \r\n ");
  ASSERT_TRUE(tags.ok()) << tags.error();
  ASSERT_EQ(tags->size(), 2u);
  EXPECT_EQ((*tags)[0].name, "v");
  EXPECT_EQ((*tags)[0].value, "1");
  EXPECT_EQ((*tags)[1].name, "a_b9");
  EXPECT_EQ((*tags)[1].value, "x y");
}

TEST(DkimTagList, EmptyListsAndTrailingSemicolon) {
  EXPECT_TRUE(parse_tag_list("").value().empty());
  EXPECT_TRUE(parse_tag_list(" \r\n ").value().empty());
  EXPECT_EQ(parse_tag_list("a=1;").value().size(), 1u);
  EXPECT_EQ(parse_tag_list("a=1 ; \t").value().size(), 1u);
}

TEST(DkimTagList, Errors) {
  for (const std::string_view bad : {";", "a=1;;b=2", "a=1;;", " ; a=1", "a", "a=1; b", "a=1; =2", "1a=x",
                                     "_a=x", "a-b=x", "a b=x", "a=1; a=2", "a=\x01", "a=x\x7f"}) {
    EXPECT_FALSE(parse_tag_list(bad).ok()) << "accepted: " << bad;
  }
  EXPECT_EQ(parse_tag_list("a=1; b=2; a=3").error(), "duplicate tag a");
  // Names are case sensitive: "a" and "A" are two tags.
  EXPECT_EQ(parse_tag_list("a=1; A=2").value().size(), 2u);
  // UTF-8 in values (RFC 8616) is accepted.
  EXPECT_TRUE(parse_tag_list("n=caf\xc3\xa9").ok());
}

TEST(DkimTagList, TagLimit) {
  std::string text;
  for (std::size_t i = 0; i < kMaxTags; ++i) text += "t" + std::to_string(i) + "=x;";
  EXPECT_EQ(parse_tag_list(text).value().size(), kMaxTags);
  text += "one=more";
  EXPECT_EQ(parse_tag_list(text).error(), "more than 64 tags");
}

// ---- Base64 ----

TEST(DkimBase64, StrictDecoding) {
  EXPECT_EQ(decode_base64("").value(), std::vector<std::uint8_t>{});
  EXPECT_EQ(decode_base64("QQ==").value(), (std::vector<std::uint8_t>{'A'}));
  EXPECT_EQ(decode_base64("QUI=").value(), (std::vector<std::uint8_t>{'A', 'B'}));
  EXPECT_EQ(decode_base64(" QU\r\n\tJD ").value(), (std::vector<std::uint8_t>{'A', 'B', 'C'}));
  EXPECT_EQ(decode_base64("+/+/").value(), (std::vector<std::uint8_t>{0xfb, 0xff, 0xbf}));
  for (const std::string_view bad : {"QQ=", "Q===", "====", "QQ==QUJD", "QU=I", "QUJ*", "QUJDQ", "QUJ-"}) {
    EXPECT_FALSE(decode_base64(bad).has_value()) << bad;
  }
}

// ---- DKIM-Signature parsing (RFC 6376 section 3.5) ----

constexpr std::string_view kBh = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=";
const std::string kMinimal =
    "v=1; a=rsa-sha256; d=Example.COM; s=sel; h=From : To; bh=" + std::string(kBh) + "; b=QUJD";

TEST(DkimSignatureParse, MinimalAndDefaults) {
  auto sig = parse_signature(kMinimal);
  ASSERT_TRUE(sig.ok()) << sig.error();
  EXPECT_EQ(sig->algorithm, "rsa-sha256");
  EXPECT_EQ(sig->key_type, KeyType::rsa);
  EXPECT_EQ(sig->header_canonicalization, Canonicalization::simple);
  EXPECT_EQ(sig->body_canonicalization, Canonicalization::simple);
  EXPECT_EQ(sig->domain, "example.com");
  EXPECT_EQ(sig->selector, "sel");
  EXPECT_EQ(sig->identity, "@example.com");
  EXPECT_EQ(sig->signed_headers, (std::vector<std::string>{"from", "to"}));
  EXPECT_EQ(sig->body_hash.size(), 32u);
  EXPECT_EQ(sig->signature, (std::vector<std::uint8_t>{'A', 'B', 'C'}));
  EXPECT_EQ(sig->b_text, "QUJD");
  EXPECT_FALSE(sig->body_length);
  EXPECT_FALSE(sig->timestamp);
  EXPECT_FALSE(sig->expiration);
}

TEST(DkimSignatureParse, EveryTag) {
  auto sig = parse_signature(
      "v=1; a=ED25519-SHA256; c=relaxed/simple; d=example.com; i=user@Mail.Example.com; l=123; q=dns/txt; "
      "s=2026.sel_a; t=1000; x=2000; h=from:subject:from; z=unknown tags are ignored; bh=" +
      std::string(kBh) + "; b=QU JD");
  ASSERT_TRUE(sig.ok()) << sig.error();
  EXPECT_EQ(sig->algorithm, "ed25519-sha256");
  EXPECT_EQ(sig->key_type, KeyType::ed25519);
  EXPECT_EQ(sig->header_canonicalization, Canonicalization::relaxed);
  EXPECT_EQ(sig->body_canonicalization, Canonicalization::simple);
  EXPECT_EQ(sig->identity, "user@Mail.Example.com");
  EXPECT_EQ(sig->body_length, 123u);
  EXPECT_EQ(sig->timestamp, 1000u);
  EXPECT_EQ(sig->expiration, 2000u);
  EXPECT_EQ(sig->selector, "2026.sel_a");
  EXPECT_EQ(sig->signed_headers, (std::vector<std::string>{"from", "subject", "from"}));
  EXPECT_EQ(sig->b_text, "QUJD");
}

TEST(DkimSignatureParse, Canonicalizations) {
  const auto canon = [](std::string_view c) {
    auto sig = parse_signature(kMinimal + "; c=" + std::string(c));
    return sig.ok() ? std::pair{sig->header_canonicalization, sig->body_canonicalization}
                    : std::pair{Canonicalization::simple, Canonicalization::simple};
  };
  EXPECT_EQ(canon("relaxed"), std::pair(Canonicalization::relaxed, Canonicalization::simple));
  EXPECT_EQ(canon("simple/relaxed"), std::pair(Canonicalization::simple, Canonicalization::relaxed));
  EXPECT_EQ(canon("Relaxed/Relaxed"), std::pair(Canonicalization::relaxed, Canonicalization::relaxed));
  for (const std::string_view bad : {"", "strict", "relaxed/relaxed/relaxed", "relaxed/", "/simple"}) {
    EXPECT_FALSE(parse_signature(kMinimal + "; c=" + std::string(bad)).ok()) << bad;
  }
}

TEST(DkimSignatureParse, RequiredTags) {
  const std::string all = kMinimal;
  for (const std::string_view tag : {"v", "a", "b", "bh", "d", "h", "s"}) {
    // Remove the tag-spec "<tag>=...;" (or the last one).
    auto tags = parse_tag_list(all).value();
    std::string text;
    for (const Tag& t : tags) {
      if (t.name == tag) continue;
      text += std::string(t.name) + "=" + std::string(t.value) + "; ";
    }
    auto sig = parse_signature(text);
    ASSERT_FALSE(sig.ok()) << tag;
    EXPECT_EQ(sig.error(), "missing " + std::string(tag) + "=");
  }
}

TEST(DkimSignatureParse, RefusedValues) {
  const auto error = [](const std::string& from, const std::string& to) {
    auto sig = parse_signature(replace_first(kMinimal, from, to));
    return sig.ok() ? std::string("accepted") : sig.error();
  };
  EXPECT_EQ(error("v=1", "v=2"), "v= is not 1");
  EXPECT_EQ(error("a=rsa-sha256", "a=rsa-sha1"), "rsa-sha1 is not accepted (RFC 8301)");
  EXPECT_EQ(error("a=rsa-sha256", "a=hmac-sha256"), "unsupported algorithm hmac-sha256");
  EXPECT_EQ(error("h=From : To", "h=To : Subject"), "h= does not include From");
  EXPECT_EQ(error("h=From : To", "h=From :: To"), "malformed h=");
  EXPECT_EQ(error("h=From : To", "h=From : X Y"), "malformed h=");
  EXPECT_EQ(error("d=Example.COM", "d=example..com"), "d= is not a domain name");
  EXPECT_EQ(error("d=Example.COM", "d=example.com."), "d= is not a domain name");
  EXPECT_EQ(error("d=Example.COM", "d=ex@mple.com"), "d= is not a domain name");
  EXPECT_EQ(error("d=Example.COM",
                  "d=b\xc3\xbc"
                  "cher.example"),
            "d= is not a domain name");
  EXPECT_EQ(error("s=sel", "s="), "s= is not a selector");
  EXPECT_EQ(error("s=sel", "s=" + std::string(64, 'a')), "s= is not a selector");
  EXPECT_EQ(error("s=sel", "s=sel; q=http/well-known"), "q= without dns/txt");
  EXPECT_EQ(error("s=sel", "s=sel; q=dns/txt:other"), "accepted");
  EXPECT_EQ(error("s=sel", "s=sel; i=@example.net"), "i= is not within d=");
  EXPECT_EQ(error("s=sel", "s=sel; i=@badexample.com"), "i= is not within d=");
  EXPECT_EQ(error("s=sel", "s=sel; i=@com"), "i= is not within d=");
  EXPECT_EQ(error("s=sel", "s=sel; i=example.com"), "malformed i=");
  EXPECT_EQ(error("s=sel", "s=sel; i=@sub.EXAMPLE.com"), "accepted");
  EXPECT_EQ(error("s=sel", "s=sel; i=\"a@b\"@example.com"), "accepted");
  EXPECT_EQ(error("s=sel", "s=sel; l=12a"), "malformed l=");
  EXPECT_EQ(error("s=sel", "s=sel; l="), "malformed l=");
  EXPECT_EQ(error("s=sel", "s=sel; t=-1"), "malformed t=");
  EXPECT_EQ(error("s=sel", "s=sel; x=1.5"), "malformed x=");
  EXPECT_EQ(error("s=sel", "s=sel; t=100; x=100"), "x= is not after t=");
  EXPECT_EQ(error("s=sel", "s=sel; t=100; x=99"), "x= is not after t=");
  EXPECT_EQ(error("s=sel", "s=sel; t=100; x=101"), "accepted");
  EXPECT_EQ(error("bh=" + std::string(kBh), "bh=AAAA"), "malformed bh=");  // 3 bytes, not 32
  EXPECT_EQ(error("b=QUJD", "b="), "malformed b=");
  EXPECT_EQ(error("b=QUJD", "b=QUJ"), "malformed b=");
  EXPECT_EQ(error("s=sel", "s=sel; s=sel"), "duplicate tag s");
  // An l= beyond 64 bits saturates rather than wrapping.
  auto huge = parse_signature(kMinimal + "; l=99999999999999999999999999");
  ASSERT_TRUE(huge.ok());
  EXPECT_EQ(*huge->body_length, std::numeric_limits<std::uint64_t>::max());
}

TEST(DkimSignatureParse, SignedHeaderLimit) {
  std::string names = "from";
  for (std::size_t i = 1; i < kMaxSignedHeaders; ++i) names += ":x-" + std::to_string(i);
  EXPECT_TRUE(parse_signature(replace_first(kMinimal, "h=From : To", "h=" + names)).ok());
  names += ":one-more";
  EXPECT_EQ(parse_signature(replace_first(kMinimal, "h=From : To", "h=" + names)).error(),
            "h= names more than 256 fields");
}

// ---- Key records (RFC 6376 section 3.6.1) ----

TEST(DkimKeyRecord, DefaultsAndTags) {
  auto key = parse_key_record("p=AQ AB");
  ASSERT_TRUE(key.ok()) << key.error();
  EXPECT_EQ(key->key_type, KeyType::rsa);
  EXPECT_EQ(key->public_key, (std::vector<std::uint8_t>{1, 0, 1}));
  EXPECT_FALSE(key->testing);
  EXPECT_FALSE(key->strict);

  auto ed = parse_key_record("v=DKIM1; k=ed25519; h=sha1:sha256; s=email:tlsrpt; t=y:s:z; n=hello; p=AQAB;");
  ASSERT_TRUE(ed.ok()) << ed.error();
  EXPECT_EQ(ed->key_type, KeyType::ed25519);
  EXPECT_TRUE(ed->testing);
  EXPECT_TRUE(ed->strict);
  EXPECT_TRUE(parse_key_record("s=*; p=AQAB").ok());

  auto revoked = parse_key_record("v=DKIM1; p=");
  ASSERT_TRUE(revoked.ok());
  EXPECT_TRUE(revoked->public_key.empty());
}

TEST(DkimKeyRecord, Refused) {
  const auto error = [](std::string_view record) {
    auto key = parse_key_record(record);
    return key.ok() ? std::string("accepted") : key.error();
  };
  EXPECT_EQ(error("k=rsa; v=DKIM1; p=AQAB"), "key record: v= is not the first tag");
  EXPECT_EQ(error("v=DKIM2; p=AQAB"), "key record: v= is not DKIM1");
  EXPECT_EQ(error("v=dkim1; p=AQAB"), "key record: v= is not DKIM1");
  EXPECT_EQ(error("k=dsa; p=AQAB"), "key record: unknown key type k=dsa");
  EXPECT_EQ(error("h=sha1; p=AQAB"), "key record: h= does not allow sha256");
  EXPECT_EQ(error("s=tlsrpt; p=AQAB"), "key record: not for email (s=)");
  EXPECT_EQ(error("v=DKIM1; k=rsa"), "key record: missing p=");
  EXPECT_EQ(error("v=DKIM1; p=not base64!"), "key record: malformed p=");
  EXPECT_EQ(error("p=AQAB; p=AQAB"), "key record: duplicate tag p");
  EXPECT_EQ(error("v=DKIM1;; p=AQAB"), "key record: empty tag-spec");
}

// ---- Header fields and selection (RFC 6376 section 5.4.2) ----

TEST(DkimSplit, FieldsAndBody) {
  const std::string message = crlf("From: a\nSubject: one\n\ttwo\nX-Empty:\nB : c\n\nbody\n");
  const MessageParts parts = split_message(message);
  ASSERT_EQ(parts.fields.size(), 4u);
  EXPECT_EQ(parts.fields[0].name, "From");
  EXPECT_EQ(parts.fields[0].raw, "From: a");
  EXPECT_EQ(parts.fields[1].raw, "Subject: one\r\n\ttwo");
  EXPECT_EQ(parts.fields[2].name, "X-Empty");
  EXPECT_EQ(parts.fields[3].name, "B");
  EXPECT_EQ(parts.body, "body\r\n");
  EXPECT_FALSE(parts.too_many_fields);
}

TEST(DkimSplit, OddShapes) {
  // No empty line: all header, no body.
  const MessageParts only = split_message("From: a\r\nTo: b\r\n");
  EXPECT_EQ(only.fields.size(), 2u);
  EXPECT_EQ(only.body, "");
  // Bare LF line ends.
  const MessageParts lf = split_message("From: a\nSubject: x\n y\n\nbody\n");
  ASSERT_EQ(lf.fields.size(), 2u);
  EXPECT_EQ(lf.fields[1].raw, "Subject: x\n y");
  EXPECT_EQ(lf.body, "body\n");
  // A line whose text before the first colon is no field name (an mbox
  // From_ line), or that has no colon, is a field with no name.
  const MessageParts mbox =
      split_message("From alice Thu Oct  1 12:00:00 2026\r\nFrom: a\r\nno colon\r\n\r\n");
  ASSERT_EQ(mbox.fields.size(), 3u);
  EXPECT_EQ(mbox.fields[0].name, "");
  EXPECT_EQ(mbox.fields[1].name, "From");
  EXPECT_EQ(mbox.fields[2].name, "");
  EXPECT_EQ(mbox.fields[2].raw, "no colon");
  const MessageParts odd = split_message("X-\xc3\xa9: a\r\n: empty\r\nX-Ok\t : b\r\n\r\n");
  ASSERT_EQ(odd.fields.size(), 3u);
  EXPECT_EQ(odd.fields[0].name, "");
  EXPECT_EQ(odd.fields[1].name, "");
  EXPECT_EQ(odd.fields[2].name, "X-Ok");
  // A continuation line with no field before it stands alone.
  const MessageParts leading = split_message(" lost\r\nFrom: a\r\n\r\nx");
  ASSERT_EQ(leading.fields.size(), 2u);
  EXPECT_EQ(leading.fields[0].name, "");
  EXPECT_EQ(leading.body, "x");
  // No header at all.
  const MessageParts none = split_message("\r\nbody");
  EXPECT_TRUE(none.fields.empty());
  EXPECT_EQ(none.body, "body");
  EXPECT_TRUE(split_message("").fields.empty());
}

TEST(DkimSplit, HeaderFieldLimit) {
  std::string header;
  for (std::size_t i = 0; i < kMaxHeaderFields; ++i) header += "X-N: " + std::to_string(i) + "\r\n";
  const std::string at_limit_message = header + "\r\nbody";
  const MessageParts at_limit = split_message(at_limit_message);
  EXPECT_EQ(at_limit.fields.size(), kMaxHeaderFields);
  EXPECT_FALSE(at_limit.too_many_fields);
  EXPECT_EQ(at_limit.body, "body");
  const std::string over_message = header + "X-N: one more\r\n\r\nbody";
  const MessageParts over = split_message(over_message);
  EXPECT_EQ(over.fields.size(), kMaxHeaderFields);
  EXPECT_TRUE(over.too_many_fields);
}

TEST(DkimSelect, BottomUpRepeatedAndOversigned) {
  const std::string message =
      crlf("DKIM-Signature: x\nX-Tag: top\nFrom: a\nx-tag: middle\nX-TAG: bottom\n\n");
  const MessageParts parts = split_message(message);
  using V = std::vector<std::size_t>;
  EXPECT_EQ(select_headers(parts, {"x-tag"}, 0), V({4}));
  EXPECT_EQ(select_headers(parts, {"x-tag", "x-tag"}, 0), V({4, 3}));
  EXPECT_EQ(select_headers(parts, {"x-tag", "from", "x-tag", "x-tag", "x-tag"}, 0), V({4, 2, 3, 1}));
  // Absent names select nothing.
  EXPECT_EQ(select_headers(parts, {"reply-to", "from", "from"}, 0), V({2}));
  // The signature being verified is never selected; others can be.
  EXPECT_EQ(select_headers(parts, {"dkim-signature"}, 0), V({}));
  EXPECT_EQ(select_headers(parts, {"dkim-signature"}, 99), V({0}));
}

// ---- Signatures made here ----

TEST(DkimSigned, RoundTripEveryCanonicalizationAndAlgorithm) {
  for (const TestKey* key : {&ed_key(), &rsa_key()}) {
    for (const auto header : {Canonicalization::simple, Canonicalization::relaxed}) {
      for (const auto body : {Canonicalization::simple, Canonicalization::relaxed}) {
        TestSigner signer{.key = key, .header = header, .body = body};
        const std::string signed_message = signer.sign(kPlain);
        const DkimVerdict v = verify_nth(signed_message, key->record);
        EXPECT_EQ(v.result, DkimResult::pass) << describe(v);
        EXPECT_EQ(verify_nth(replace_first(signed_message, "See you", "See yoU"), key->record).result,
                  DkimResult::fail);
        EXPECT_EQ(verify_nth(replace_first(signed_message, "Hello", "Hullo"), key->record).result,
                  DkimResult::fail);
      }
    }
  }
  // An RSA key published as a bare PKCS#1 RSAPublicKey works too.
  EXPECT_EQ(verify_nth(TestSigner{.key = &rsa_key()}.sign(kPlain), rsa_key().pkcs1_record).result,
            DkimResult::pass);
}

TEST(DkimSigned, SimpleHeaderCanonicalizationSeesEveryByte) {
  TestSigner signer{.key = &ed_key(), .header = Canonicalization::simple};
  const std::string signed_message = signer.sign(kPlain);
  EXPECT_EQ(
      verify_nth(replace_first(signed_message, "Subject: Hello", "Subject:  Hello"), ed_key().record).result,
      DkimResult::fail);
  EXPECT_EQ(
      verify_nth(replace_first(signed_message, "Subject: Hello", "subject: Hello"), ed_key().record).result,
      DkimResult::fail);
  // The body was relaxed: a trailing space does not matter.
  EXPECT_EQ(verify_nth(replace_first(signed_message, "See you.", "See you. "), ed_key().record).result,
            DkimResult::pass);
}

TEST(DkimSigned, BareLfMessageVerifiesInNetworkNormalForm) {
  for (const auto c : {Canonicalization::simple, Canonicalization::relaxed}) {
    const std::string signed_message = TestSigner{.key = &ed_key(), .header = c, .body = c}.sign(kPlain);
    std::string lf;
    for (std::size_t i = 0; i < signed_message.size(); ++i) {
      if (signed_message[i] == '\r' && i + 1 < signed_message.size() && signed_message[i + 1] == '\n')
        continue;
      lf += signed_message[i];
    }
    EXPECT_EQ(verify_nth(lf, ed_key().record).result, DkimResult::pass);
  }
}

TEST(DkimSigned, Expiration) {
  const auto signed_with = [](std::string extra) {
    return TestSigner{.key = &ed_key(), .extra = std::move(extra)}.sign(kPlain);
  };
  const std::string t = "t=" + std::to_string(kNowSeconds - 3600) + "; ";
  // x= one second before the injected clock: expired (section 6.1.1: PERMFAIL).
  const DkimVerdict expired =
      verify_nth(signed_with(t + "x=" + std::to_string(kNowSeconds - 1) + "; "), ed_key().record);
  EXPECT_EQ(expired.result, DkimResult::permerror);
  EXPECT_EQ(expired.reason, "signature expired");
  EXPECT_EQ(expired.domain, "example.com");
  // x= exactly now, or later: still valid.
  EXPECT_EQ(verify_nth(signed_with(t + "x=" + std::to_string(kNowSeconds) + "; "), ed_key().record).result,
            DkimResult::pass);
  EXPECT_EQ(
      verify_nth(signed_with(t + "x=" + std::to_string(kNowSeconds + 86400) + "; "), ed_key().record).result,
      DkimResult::pass);
  // The same signature checked a day later has expired.
  const std::string tomorrow = signed_with("x=" + std::to_string(kNowSeconds + 3600) + "; ");
  EXPECT_EQ(verify_nth(tomorrow, ed_key().record, 0, kNow + std::chrono::hours(24)).result,
            DkimResult::permerror);
  // x= not after t=: malformed whatever the clock says.
  EXPECT_EQ(verify_nth(signed_with("t=2000000000; x=1999999999; "), ed_key().record).result,
            DkimResult::permerror);
  // A t= in the future is not checked (RFC 6376 lets verifiers ignore such
  // signatures, but does not require it).
  EXPECT_EQ(
      verify_nth(signed_with("t=" + std::to_string(kNowSeconds + 86400) + "; "), ed_key().record).result,
      DkimResult::pass);
}

TEST(DkimSigned, BodyLength) {
  const std::string canonical = canonicalize_body(split_message(kPlain).body, Canonicalization::relaxed);
  // l= the whole body: text appended later is not covered.
  const std::string whole = TestSigner{.key = &ed_key(), .length = canonical.size()}.sign(kPlain);
  EXPECT_EQ(verify_nth(whole, ed_key().record).result, DkimResult::pass);
  EXPECT_EQ(verify_nth(whole + "Appended by a list.\r\n", ed_key().record).result, DkimResult::pass);
  EXPECT_EQ(verify_nth(replace_first(whole, "Hi Bob", "Hi Eve"), ed_key().record).result, DkimResult::fail);
  // l= shorter than the body: bytes after it may change.
  const std::string prefix = TestSigner{.key = &ed_key(), .length = 4}.sign(kPlain);
  EXPECT_EQ(verify_nth(replace_first(prefix, "See you", "Send money"), ed_key().record).result,
            DkimResult::pass);
  EXPECT_EQ(verify_nth(replace_first(prefix, "Hi Bob", "Hi Eve"), ed_key().record).result, DkimResult::fail);
  // l= one more than the canonical body: PERMFAIL (section 3.5: l= MUST NOT
  // be larger than the body), although the body hash itself would match.
  const std::string longer = TestSigner{.key = &ed_key(), .length = canonical.size() + 1}.sign(kPlain);
  const DkimVerdict v = verify_nth(longer, ed_key().record);
  EXPECT_EQ(v.result, DkimResult::permerror);
  EXPECT_EQ(v.reason, "l= is longer than the body");
  // l=0 covers nothing of the body.
  const std::string zero = TestSigner{.key = &ed_key(), .length = 0}.sign(kPlain);
  EXPECT_EQ(verify_nth(replace_first(zero, "Hi Bob", "Anything"), ed_key().record).result, DkimResult::pass);
}

TEST(DkimSigned, OversignedAbsentHeaderAndRepeatedHeaders) {
  // Reply-To is listed but absent: it contributes nothing, and one added
  // later breaks the signature.
  const std::string oversigned =
      TestSigner{.key = &ed_key(), .headers = "from:to:subject:reply-to:from"}.sign(kPlain);
  EXPECT_EQ(verify_nth(oversigned, ed_key().record).result, DkimResult::pass);
  EXPECT_EQ(verify_nth(replace_first(oversigned, "Subject:", "Reply-To: <m@evil.example>\r\nSubject:"),
                       ed_key().record)
                .result,
            DkimResult::fail);
  // A repeated field signed once: the bottom one is covered, the top one not.
  const std::string repeated_message =
      replace_first(kPlain, "Date:", "X-Tag: first\r\nX-Tag: second\r\nDate:");
  const std::string repeated = TestSigner{.key = &ed_key(), .headers = "from:x-tag"}.sign(repeated_message);
  EXPECT_EQ(verify_nth(repeated, ed_key().record).result, DkimResult::pass);
  EXPECT_EQ(verify_nth(replace_first(repeated, "X-Tag: first", "X-Tag: changed"), ed_key().record).result,
            DkimResult::pass);
  EXPECT_EQ(verify_nth(replace_first(repeated, "X-Tag: second", "X-Tag: changed"), ed_key().record).result,
            DkimResult::fail);
  // Signed twice, both are covered in bottom-up order.
  const std::string both = TestSigner{.key = &ed_key(), .headers = "from:x-tag:x-tag"}.sign(repeated_message);
  EXPECT_EQ(verify_nth(both, ed_key().record).result, DkimResult::pass);
  EXPECT_EQ(verify_nth(replace_first(both, "X-Tag: first", "X-Tag: changed"), ed_key().record).result,
            DkimResult::fail);
}

TEST(DkimSigned, FromMustBeSigned) {
  const DkimVerdict v =
      verify_nth(TestSigner{.key = &ed_key(), .headers = "to:subject"}.sign(kPlain), ed_key().record);
  EXPECT_EQ(v.result, DkimResult::permerror);
  EXPECT_EQ(v.reason, "h= does not include From");
}

TEST(DkimSigned, StrictKeysAndSubdomainIdentities) {
  const std::string sub = TestSigner{.key = &ed_key(), .extra = "i=news@Sub.Example.com; "}.sign(kPlain);
  const DkimVerdict plain = verify_nth(sub, ed_key().record);
  EXPECT_EQ(plain.result, DkimResult::pass) << describe(plain);
  EXPECT_EQ(plain.identity, "news@Sub.Example.com");
  const DkimVerdict strict = verify_nth(sub, ed_key().record + "; t=s");
  EXPECT_EQ(strict.result, DkimResult::permerror);
  EXPECT_EQ(strict.reason, "i= is below d= but the key has t=s");
  const std::string same = TestSigner{.key = &ed_key(), .extra = "i=news@EXAMPLE.com; "}.sign(kPlain);
  EXPECT_EQ(verify_nth(same, ed_key().record + "; t=s").result, DkimResult::pass);
}

TEST(DkimSigned, RsaKeySizesAroundRfc8301) {
  // 1024 bits is the RFC 8463 example's key (DkimRfc8463 tests): accepted.
  const TestKey small = make_key(KeyType::rsa, 1023);
  const DkimVerdict v1023 = verify_nth(TestSigner{.key = &small}.sign(kPlain), small.record);
  EXPECT_EQ(v1023.result, DkimResult::permerror);
  EXPECT_EQ(v1023.reason, "RSA key of 1023 bits (RFC 8301: at least 1024)");
  const TestKey tiny = make_key(KeyType::rsa, 512);
  EXPECT_EQ(verify_nth(TestSigner{.key = &tiny}.sign(kPlain), tiny.record).result, DkimResult::permerror);
  const TestKey k1024 = make_key(KeyType::rsa, 1024);
  EXPECT_EQ(verify_nth(TestSigner{.key = &k1024}.sign(kPlain), k1024.record).result, DkimResult::pass);
}

// A key record with an RSA public key of `bits` bits whose modulus is random
// (no private key exists: large sizes cost nothing to make).
std::string random_rsa_record(int bits) {
  std::unique_ptr<BIGNUM, decltype(&BN_free)> n(BN_new(), BN_free);
  std::unique_ptr<BIGNUM, decltype(&BN_free)> e(BN_new(), BN_free);
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> build(OSSL_PARAM_BLD_new(),
                                                                        OSSL_PARAM_BLD_free);
  EXPECT_EQ(BN_rand(n.get(), bits, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ODD), 1);
  EXPECT_EQ(BN_set_word(e.get(), 65537), 1);
  EXPECT_EQ(OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_N, n.get()), 1);
  EXPECT_EQ(OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_E, e.get()), 1);
  std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> params(OSSL_PARAM_BLD_to_param(build.get()),
                                                                 OSSL_PARAM_free);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr), EVP_PKEY_CTX_free);
  EVP_PKEY* raw = nullptr;
  EXPECT_EQ(EVP_PKEY_fromdata_init(ctx.get()), 1);
  EXPECT_EQ(EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()), 1);
  const UniquePkey key(raw);
  unsigned char* der = nullptr;
  const int size = i2d_PUBKEY(key.get(), &der);
  std::string record = "v=DKIM1; k=rsa; p=" + base64(der, static_cast<std::size_t>(size));
  OPENSSL_free(der);
  return record;
}

TEST(DkimSigned, RsaKeySizeUpperLimit) {
  const std::string signed_message = TestSigner{.key = &rsa_key()}.sign(kPlain);
  // 8192 bits is accepted (this key is not the signer's, so the signature fails).
  const DkimVerdict at_limit = verify_nth(signed_message, random_rsa_record(kMaxRsaKeyBits));
  EXPECT_EQ(at_limit.result, DkimResult::fail) << describe(at_limit);
  EXPECT_EQ(at_limit.reason, "signature did not verify");
  const DkimVerdict over = verify_nth(signed_message, random_rsa_record(kMaxRsaKeyBits + 1));
  EXPECT_EQ(over.result, DkimResult::permerror);
  EXPECT_EQ(over.reason, "RSA key of 8193 bits is too large");
}

TEST(DkimSigned, TooManyHeaderFieldsIsPolicy) {
  std::string many = kPlain;
  std::string extra;
  for (std::size_t i = 0; i + 6 < kMaxHeaderFields; ++i) extra += "X-N: " + std::to_string(i) + "\r\n";
  many = replace_first(many, "Message-ID:", extra + "Message-ID:");
  // Exactly kMaxHeaderFields with the signature: checked.
  const std::string at_limit = TestSigner{.key = &ed_key()}.sign(many);
  EXPECT_EQ(split_message(at_limit).fields.size(), kMaxHeaderFields);
  EXPECT_EQ(verify_nth(at_limit, ed_key().record).result, DkimResult::pass);
  // One more (a Received added on top): not checked.
  const std::string over = "Received: by mx\r\n" + at_limit;
  const DkimVerdict v = verify_with_key(over, signature_value(at_limit), ed_key().record, kNow);
  EXPECT_EQ(v.result, DkimResult::policy);
  EXPECT_EQ(v.reason, "not checked: more than 1000 header fields");
  EXPECT_EQ(v.domain, "example.com");
}

TEST(DkimSigned, MalformedSignatureStillNamesItsSigner) {
  const std::string message =
      "DKIM-Signature: v=1; a=rsa-sha256; d=Example.com; s=sel; b=QUJDREVGR0hJSg==\r\n" + kPlain;
  const DkimVerdict v = verify_nth(message, rsa_key().record);
  EXPECT_EQ(v.result, DkimResult::permerror);
  EXPECT_EQ(v.reason, "missing bh=");
  EXPECT_EQ(v.domain, "example.com");
  EXPECT_EQ(v.selector, "sel");
  EXPECT_EQ(v.identity, "@example.com");
  EXPECT_EQ(v.b_prefix, "QUJDREVG");
}

TEST(DkimResultNames, Rfc8601) {
  EXPECT_EQ(to_string(DkimResult::none), "none");
  EXPECT_EQ(to_string(DkimResult::pass), "pass");
  EXPECT_EQ(to_string(DkimResult::fail), "fail");
  EXPECT_EQ(to_string(DkimResult::neutral), "neutral");
  EXPECT_EQ(to_string(DkimResult::policy), "policy");
  EXPECT_EQ(to_string(DkimResult::temperror), "temperror");
  EXPECT_EQ(to_string(DkimResult::permerror), "permerror");
}

// ---- Oracle: python3-dkim signs, we verify ----

// Debian's python3-dkim lives in /usr/lib/python3/dist-packages, which a
// pyenv or virtualenv python3 first on PATH does not see: use the system one.
std::string python3() {
  const char* configured = std::getenv("MXGATE_PYTHON3");
  return configured != nullptr && *configured != '\0' ? configured : "/usr/bin/python3";
}

// Writes "KEY <alg> <hex record>" for each key, then "MSG <alg> <l 0|1>
// <hex message>" for each signed message.  Exit 3 when dkim is missing.
constexpr std::string_view kOracleScript = R"PY(
import binascii, os, shutil, sys, tempfile
try:
    import dkim
    from dkim import dknewkey
    import nacl  # ed25519 signing
except ImportError as e:
    print("IMPORT-ERROR %s" % e)
    sys.exit(3)

work = tempfile.mkdtemp()
try:
    rsa_path = os.path.join(work, "rsa.key")
    dknewkey.GenRSAKeys(rsa_path, False)
    dknewkey.ExtractRSADnsPublicKey(rsa_path, os.path.join(work, "rsa.dns"), False)
    ed_path = os.path.join(work, "ed.key")
    ed = dknewkey.GenEd25519Keys(ed_path, False)
    dknewkey.ExtractEd25519PublicKey(os.path.join(work, "ed.dns"), ed, False)
    keys = {
        b"rsa-sha256": (open(rsa_path, "rb").read(), open(os.path.join(work, "rsa.dns"), "rb").read()),
        b"ed25519-sha256": (open(ed_path, "rb").read(), open(os.path.join(work, "ed.dns"), "rb").read()),
    }
finally:
    shutil.rmtree(work)

def out(*fields):
    sys.stdout.write(" ".join(f if isinstance(f, str) else binascii.hexlify(f).decode() for f in fields) + "\n")

for alg, (_, record) in sorted(keys.items()):
    out("KEY", alg.decode(), record)

base = [
    b"From: Alice Example <alice@example.com>",
    b"To: Bob <bob@example.org>",
    b"Subject: Hello",
    b"Date: Thu, 01 Oct 2026 12:00:00 +0000",
    b"Message-ID: <m@example.com>",
]
header_sets = [
    (base, None),
    ([base[0], b"To: Bob <bob@example.org>,\r\n\tCarol <carol@example.org>",
      b"Subject: This is a long\r\n\tsubject line   \r\n   folded twice  ", base[3], base[4]], None),
    ([base[0], b"To:   Bob    <bob@example.org>   ", b"Subject:\tTabbed\t\tsubject\t", base[4]], None),
    ([b"FROM: Alice <alice@example.com>", b"sUbJeCt: Mixed case", b"to: bob@example.org", base[4]], None),
    (base + [b"X-Tag: one", b"X-Tag: two", b"X-Tag: three"],
     [b"from", b"x-tag", b"x-tag", b"subject", b"reply-to", b"from"]),
    (base + [b"X-Empty:", b"X-Folded:\r\n value on the next line", b"X-Keywords:a,b"],
     [b"from", b"x-empty", b"x-folded", b"x-keywords", b"subject"]),
    ([b"Received: by relay.example.com; Thu, 01 Oct 2026 12:00:01 +0000"] + base, None),
    (base + [b"MIME-Version: 1.0", b"Content-Type: text/plain;\r\n charset=utf-8"],
     [b"from", b"to", b"subject", b"mime-version", b"content-type", b"date", b"message-id"]),
]
bodies = [
    b"Hello.\r\n",
    b"",
    b"\r\n",
    b"\r\n\r\n\r\n",
    b"Line with trailing spaces   \r\nTabs\t\tinside\t and   runs\r\n",
    b"   \r\n\t \r\n",
    b"Text\r\n\r\n\r\n",
    b" leading space\r\n\tleading tab\r\n",
    b"No final line end",
    b"a\r\n   \r\nb\r\n  \r\n\r\n",
    (b"x" * 2000) + b"\r\n" + "Gr\u00fc\u00dfe \U0001F600\r\n".encode("utf-8"),
    b"dot\r\n.\r\n..two dots\r\n\r\nlast\r\n",
    b"\r\n\r\nstarts with empty lines\r\n",
]
canons = [(b"simple", b"simple"), (b"simple", b"relaxed"), (b"relaxed", b"simple"), (b"relaxed", b"relaxed")]
algs = sorted(keys)
count = 0
for ci, canon in enumerate(canons):
    for bi, body in enumerate(bodies):
        headers, include = header_sets[(bi + 3 * ci) % len(header_sets)]
        alg = algs[(bi + ci) % 2]
        # l= only on bodies with text, so that changing the body can fail.
        length = (bi + ci) % 3 == 0 and body.strip() != b""
        message = b"\r\n".join(headers) + b"\r\n\r\n" + body
        sig = dkim.sign(message, b"sel" + str(count).encode(), b"example.com", keys[alg][0],
                        canonicalize=canon, signature_algorithm=alg, include_headers=include,
                        length=length, linesep=b"\r\n")
        out("MSG", alg.decode(), "1" if length else "0", sig + message)
        count += 1
)PY";

struct OracleRun {
  int exit_code = -1;
  std::string output;
};

OracleRun run_oracle() {
  OracleRun run;
  char path[] = "/tmp/mxgate-dkim-oracle-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return run;
  const bool written =
      write(fd, kOracleScript.data(), kOracleScript.size()) == static_cast<ssize_t>(kOracleScript.size());
  close(fd);
  if (written) {
    // -I: neither the script's directory (/tmp, where a "dkim" folder would
    // shadow the module) nor PYTHON* variables or the user site come in.
    const std::string command = python3() + " -I " + path + " 2>&1";
    if (FILE* pipe = popen(command.c_str(), "r")) {
      std::array<char, 65536> buffer{};
      std::size_t n = 0;
      while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) run.output.append(buffer.data(), n);
      const int status = pclose(pipe);
      run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
  }
  unlink(path);
  return run;
}

std::string unhex(std::string_view hex) {
  std::string out;
  const auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(nibble(hex[i]) * 16 + nibble(hex[i + 1]));
  }
  return out;
}

// Changes one letter or digit in [begin, end) of text; false if there is none.
bool flip_alnum(std::string& text, std::size_t begin, std::size_t end) {
  for (std::size_t i = begin; i < end && i < text.size(); ++i) {
    if (std::isalnum(static_cast<unsigned char>(text[i]))) {
      text[i] = static_cast<char>(text[i] ^ 0x01);
      return true;
    }
  }
  return false;
}

TEST(DkimOracle, Python3DkimSignaturesVerify) {
  const OracleRun run = run_oracle();
  ASSERT_NE(run.exit_code, 3)
      << "python3-dkim is required for this test (Debian: apt-get install python3-dkim); " << python3()
      << " said: " << run.output;
  ASSERT_EQ(run.exit_code, 0) << python3()
                              << " failed to sign (set MXGATE_PYTHON3 to another interpreter?):\n"
                              << run.output;
  std::map<std::string, std::string> records;
  std::size_t checked = 0;
  std::size_t with_length = 0;
  std::size_t line_start = 0;
  while (line_start < run.output.size()) {
    const std::size_t line_end = std::min(run.output.find('\n', line_start), run.output.size());
    const std::string line = run.output.substr(line_start, line_end - line_start);
    line_start = line_end + 1;
    const std::size_t s1 = line.find(' ');
    const std::size_t s2 = line.find(' ', s1 + 1);
    ASSERT_NE(s2, std::string::npos) << "unexpected oracle output: " << line;
    const std::string kind = line.substr(0, s1);
    const std::string algorithm = line.substr(s1 + 1, s2 - s1 - 1);
    if (kind == "KEY") {
      records[algorithm] = unhex(line.substr(s2 + 1));
      continue;
    }
    ASSERT_EQ(kind, "MSG") << line;
    ASSERT_EQ(records.count(algorithm), 1u) << algorithm;
    const std::size_t s3 = line.find(' ', s2 + 1);
    const bool length = line.substr(s2 + 1, s3 - s2 - 1) == "1";
    const std::string message = unhex(line.substr(s3 + 1));
    const std::string& record = records[algorithm];
    SCOPED_TRACE("message " + std::to_string(checked) + " (" + algorithm + "):\n" + message);
    ++checked;
    with_length += length ? 1 : 0;

    const DkimVerdict v = verify_nth(message, record, 0, Clock::now());
    EXPECT_EQ(v.result, DkimResult::pass) << describe(v);
    EXPECT_EQ(v.algorithm, algorithm);
    EXPECT_EQ(v.domain, "example.com");
    EXPECT_EQ(v.identity, "@example.com");

    // A flipped byte in the body.
    const MessageParts parts = split_message(message);
    const std::size_t body_at = message.size() - parts.body.size();
    std::string body_changed = message;
    if (!flip_alnum(body_changed, body_at, message.size())) body_changed.insert(body_at, "x");
    const DkimVerdict bv = verify_nth(body_changed, record, 0, Clock::now());
    EXPECT_EQ(bv.result, DkimResult::fail) << describe(bv);
    EXPECT_EQ(bv.reason, "body hash did not verify");

    // A flipped byte in the value of the signed From field.
    std::string from_changed = message;
    bool flipped = false;
    for (const HeaderField& field : parts.fields) {
      if (field.name.size() == 4 && (field.name[0] == 'F' || field.name[0] == 'f') &&
          (field.name[1] == 'R' || field.name[1] == 'r')) {
        const std::size_t at =
            static_cast<std::size_t>(field.raw.data() - message.data()) + field.raw.find(':');
        flipped = flip_alnum(from_changed, at, at + field.raw.size());
      }
    }
    ASSERT_TRUE(flipped);
    const DkimVerdict hv = verify_nth(from_changed, record, 0, Clock::now());
    EXPECT_EQ(hv.result, DkimResult::fail) << describe(hv);
    EXPECT_EQ(hv.reason, "signature did not verify");

    // Our own Received field on top changes nothing; with l=, neither does
    // text appended to the body.
    EXPECT_EQ(verify_nth("Received: from relay by mx; Thu, 01 Oct 2026 12:00:02 +0000\r\n" + message, record,
                         0, Clock::now())
                  .result,
              DkimResult::pass);
    if (length) {
      EXPECT_EQ(verify_nth(message + "\r\nAppended.\r\n", record, 0, Clock::now()).result, DkimResult::pass);
    }
  }
  EXPECT_EQ(records.size(), 2u);
  EXPECT_EQ(checked, 52u);
  EXPECT_GE(with_length, 10u);
}

// ---- verify_dkim() with fixed DNS answers ----

class FixedResolver : public dns::Resolver {
 public:
  std::map<std::string, dns::Answer<std::string>> answers;  // absent names: NXDOMAIN
  std::vector<std::string> queries;

  void set(const std::string& name, dns::Status status, std::vector<std::string> records = {},
           dns::Security security = dns::Security::insecure, std::string reason = {}) {
    answers[name] = dns::Answer<std::string>{status, security, std::move(records), std::move(reason)};
  }

  asio::awaitable<dns::Answer<dns::MxRecord>> mx(std::string) override {
    co_return dns::Answer<dns::MxRecord>{};
  }
  asio::awaitable<dns::Answer<asio::ip::address>> addresses(std::string) override {
    co_return dns::Answer<asio::ip::address>{};
  }
  asio::awaitable<dns::Answer<dns::TlsaRecord>> tlsa(std::uint16_t, std::string) override {
    co_return dns::Answer<dns::TlsaRecord>{};
  }
  asio::awaitable<dns::Answer<std::string>> txt(std::string name) override {
    queries.push_back(name);
    const auto it = answers.find(name);
    if (it == answers.end())
      co_return dns::Answer<std::string>{dns::Status::nxdomain, dns::Security::insecure, {}, {}};
    co_return it->second;
  }
};

std::vector<DkimVerdict> run_verify(std::string_view message, dns::Resolver& resolver, DkimLimits limits) {
  asio::io_context io;
  std::vector<DkimVerdict> verdicts;
  bool done = false;
  asio::co_spawn(io, verify_dkim(message, resolver, limits),
                 [&](std::exception_ptr error, std::vector<DkimVerdict> result) {
                   if (error) std::rethrow_exception(error);
                   verdicts = std::move(result);
                   done = true;
                 });
  io.run();
  EXPECT_TRUE(done);
  return verdicts;
}

DkimLimits at_now() {
  DkimLimits limits;
  limits.now = kNow;
  return limits;
}

constexpr const char* kBrisbane = "brisbane._domainkey.football.example.com";
constexpr const char* kTest = "test._domainkey.football.example.com";

TEST(DkimDriver, KeysFoundPass) {
  FixedResolver dns;
  dns.set(kBrisbane, dns::Status::ok, {std::string(kRfc8463Ed25519Record)});
  dns.set(kTest, dns::Status::ok, {std::string(kRfc8463RsaRecord)});
  const auto verdicts = run_verify(kRfc8463Message, dns, at_now());
  ASSERT_EQ(verdicts.size(), 2u);
  EXPECT_EQ(verdicts[0].result, DkimResult::pass) << describe(verdicts[0]);
  EXPECT_EQ(verdicts[0].selector, "brisbane");
  EXPECT_EQ(verdicts[1].result, DkimResult::pass) << describe(verdicts[1]);
  EXPECT_EQ(verdicts[1].selector, "test");
  EXPECT_EQ(dns.queries, (std::vector<std::string>{kBrisbane, kTest}));
}

TEST(DkimDriver, DnsOutcomes) {
  FixedResolver dns;
  // brisbane: NXDOMAIN (absent from the map); test: SERVFAIL.
  dns.set(kTest, dns::Status::failure, {}, dns::Security::insecure, "timed out");
  auto verdicts = run_verify(kRfc8463Message, dns, at_now());
  ASSERT_EQ(verdicts.size(), 2u);
  EXPECT_EQ(verdicts[0].result, DkimResult::permerror);
  EXPECT_EQ(verdicts[0].reason, std::string("no key at ") + kBrisbane);
  EXPECT_EQ(verdicts[1].result, DkimResult::temperror);
  EXPECT_EQ(verdicts[1].reason, "key lookup failed: timed out");

  dns.set(kBrisbane, dns::Status::ok, {"v=DKIM1; k=ed25519; p="});  // revoked
  dns.set(kTest, dns::Status::failure, {}, dns::Security::bogus, "signature expired");
  verdicts = run_verify(kRfc8463Message, dns, at_now());
  ASSERT_EQ(verdicts.size(), 2u);
  EXPECT_EQ(verdicts[0].result, DkimResult::permerror);
  EXPECT_EQ(verdicts[0].reason, "key revoked");
  EXPECT_EQ(verdicts[1].result, DkimResult::temperror);
  EXPECT_EQ(verdicts[1].reason, "key lookup DNSSEC bogus: signature expired");

  dns.set(kBrisbane, dns::Status::nodata);
  dns.set(kTest, dns::Status::ok, {std::string(kRfc8463RsaRecord), "v=DKIM1; p="});
  verdicts = run_verify(kRfc8463Message, dns, at_now());
  ASSERT_EQ(verdicts.size(), 2u);
  EXPECT_EQ(verdicts[0].result, DkimResult::permerror);
  EXPECT_EQ(verdicts[1].result, DkimResult::permerror);
  EXPECT_EQ(verdicts[1].reason, std::string("several key records at ") + kTest);

  dns.set(kBrisbane, dns::Status::ok, {});               // a CNAME without records
  dns.set(kTest, dns::Status::ok, {"v=DKIM1; p=AQAB"});  // not an RSA key
  verdicts = run_verify(kRfc8463Message, dns, at_now());
  ASSERT_EQ(verdicts.size(), 2u);
  EXPECT_EQ(verdicts[0].result, DkimResult::permerror);
  EXPECT_EQ(verdicts[1].result, DkimResult::permerror);
  EXPECT_EQ(verdicts[1].reason, "p= is not an RSA public key");
}

TEST(DkimDriver, UnsignedMessageHasNoVerdict) {
  FixedResolver dns;
  EXPECT_TRUE(run_verify(kPlain, dns, at_now()).empty());
  EXPECT_TRUE(dns.queries.empty());
}

TEST(DkimDriver, AtMostMaxSignaturesAreChecked) {
  FixedResolver dns;
  std::string message = kPlain;
  for (int i = 7; i >= 1; --i) {
    const std::string selector = "s" + std::to_string(i);
    message = TestSigner{.key = &ed_key(), .selector = selector}.sign(message);
    dns.set(selector + "._domainkey.example.com", dns::Status::ok, {ed_key().record});
  }
  DkimLimits limits = at_now();
  limits.max_signatures = 5;
  const auto verdicts = run_verify(message, dns, limits);
  ASSERT_EQ(verdicts.size(), 7u);
  for (std::size_t i = 0; i < 7; ++i) {
    EXPECT_EQ(verdicts[i].selector, "s" + std::to_string(i + 1));
    if (i < 5) {
      EXPECT_EQ(verdicts[i].result, DkimResult::pass) << describe(verdicts[i]);
    } else {
      EXPECT_EQ(verdicts[i].result, DkimResult::policy);
      EXPECT_EQ(verdicts[i].reason, "not checked: more than 5 signatures");
      EXPECT_EQ(verdicts[i].domain, "example.com");
    }
  }
  EXPECT_EQ(dns.queries.size(), 5u);
}

TEST(DkimDriver, OneQueryPerKeyAndNoQueryWhenRefusedEarly) {
  FixedResolver dns;
  dns.set("sel._domainkey.example.com", dns::Status::ok, {ed_key().record});
  const std::string twice =
      TestSigner{.key = &ed_key(), .headers = "from"}.sign(TestSigner{.key = &ed_key()}.sign(kPlain));
  const auto verdicts = run_verify(twice, dns, at_now());
  ASSERT_EQ(verdicts.size(), 2u);
  EXPECT_EQ(verdicts[0].result, DkimResult::pass);
  EXPECT_EQ(verdicts[1].result, DkimResult::pass);
  EXPECT_EQ(dns.queries.size(), 1u);

  // Malformed or expired: decided without DNS.
  dns.queries.clear();
  const std::string expired =
      TestSigner{.key = &ed_key(), .extra = "x=" + std::to_string(kNowSeconds - 10) + "; "}.sign(kPlain);
  const std::string malformed =
      "DKIM-Signature: v=1; a=rsa-sha1; d=example.com; s=sel; h=from; bh=" + std::string(kBh) +
      "; b=QUJD\r\n" + expired;
  const auto refused = run_verify(malformed, dns, at_now());
  ASSERT_EQ(refused.size(), 2u);
  EXPECT_EQ(refused[0].result, DkimResult::permerror);
  EXPECT_EQ(refused[1].result, DkimResult::permerror);
  EXPECT_EQ(refused[1].reason, "signature expired");
  EXPECT_TRUE(dns.queries.empty());
}

}  // namespace
}  // namespace mxgate::sender_auth
