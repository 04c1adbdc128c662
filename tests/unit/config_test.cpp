// Configuration parsing: every key, its default, and the one-line error for
// each kind of mistake, naming the key.
#include "config/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include "temp_dir.hpp"

namespace mxgate::config {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using test_support::TempDir;

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// The smallest valid file; top-level keys go before `top`, tables after `tables`.
std::string document(const std::string& top = "", const std::string& tables = "") {
  return "hostname = \"mx.example.test\"\n"
         "spool = \"/var/spool/mxgate\"\n" +
         top +
         "\n[[listener]]\n"
         "address = \"127.0.0.1:2525\"\n"
         "tls = \"none\"\n"
         "\n[delivery]\n"
         "maildir = \"/var/mail/mxgate\"\n" +
         tables;
}

// The error of parsing text, or "OK"; every error must be exactly one line.
std::string error_of(const std::string& text, const fs::path& base = "/etc/mxgate") {
  auto result = parse(text, base);
  if (result) return "OK";
  EXPECT_EQ(result.error().find('\n'), std::string::npos) << result.error();
  return result.error();
}

TEST(ConfigTest, MinimalFileGetsDefaults) {
  auto config = parse(document(), "/etc/mxgate");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->hostname, "mx.example.test");
  EXPECT_EQ(config->spool, "/var/spool/mxgate");
  EXPECT_EQ(config->user, "");
  EXPECT_TRUE(config->source.empty());
  ASSERT_EQ(config->listeners.size(), 1u);
  EXPECT_EQ(config->listeners[0].address, "127.0.0.1:2525");
  EXPECT_EQ(config->listeners[0].host, "127.0.0.1");
  EXPECT_EQ(config->listeners[0].port, 2525);
  EXPECT_EQ(config->listeners[0].tls, TlsMode::none);
  EXPECT_EQ(config->delivery.maildir, "/var/mail/mxgate");

  const Tls tls_defaults;
  EXPECT_TRUE(config->tls.certificates.empty());
  EXPECT_EQ(config->tls.min_version, "TLSv1.2");
  EXPECT_EQ(config->tls.ciphers, tls_defaults.ciphers);
  EXPECT_EQ(config->tls.ciphersuites, tls_defaults.ciphersuites);
  EXPECT_EQ(config->tls.groups, "X25519:P-256:P-384");

  EXPECT_EQ(config->limits.max_message_size, 36700160u);
  EXPECT_EQ(config->limits.max_recipients, 1000u);
  EXPECT_EQ(config->limits.max_command_line, 2048u);
  EXPECT_EQ(config->limits.max_errors, 10u);
  EXPECT_EQ(config->limits.max_connections, 1000u);

  EXPECT_EQ(config->timeouts.command, 300s);
  EXPECT_EQ(config->timeouts.data, 300s);
  EXPECT_EQ(config->timeouts.tls_handshake, 60s);
  EXPECT_EQ(config->timeouts.shutdown, 30s);
}

TEST(ConfigTest, EveryKeyIsRead) {
  TempDir dir;
  write_file(dir.path() / "rsa.crt", "cert");
  write_file(dir.path() / "rsa.key", "key");
  write_file(dir.path() / "ec.crt", "cert");
  write_file(dir.path() / "ec.key", "key");
  const std::string text = R"(
hostname = "MX-1.Example.Test"
spool = "spool"
user = "mxgate"

[[listener]]
address = "0.0.0.0:25"

[[listener]]
address = "[::1]:465"
tls = "implicit"

[[listener]]
address = "192.0.2.1:587"
tls = "encrypt"

[[listener]]
address = "[2001:db8::1]:2525"
tls = "none"

[tls]
certificates = [
  { cert = "rsa.crt", key = "rsa.key" },
  { cert = "ec.crt", key = "ec.key" },
]
min_version = "TLSv1.3"
ciphers = "ECDHE-RSA-AES256-GCM-SHA384"
ciphersuites = "TLS_AES_256_GCM_SHA384"
groups = "X25519"

[limits]
max_message_size = 1048576
max_recipients = 50
max_command_line = 512
max_errors = 3
max_connections = 20

[timeouts]
command = 60
data = 120
tls_handshake = 10
shutdown = 5

[delivery]
maildir = "/srv/mail/Maildir"
)";
  auto config = parse(text, dir.path());
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->hostname, "MX-1.Example.Test");
  EXPECT_EQ(config->spool, dir.path() / "spool");
  EXPECT_EQ(config->user, "mxgate");

  ASSERT_EQ(config->listeners.size(), 4u);
  EXPECT_EQ(config->listeners[0].host, "0.0.0.0");
  EXPECT_EQ(config->listeners[0].port, 25);
  EXPECT_EQ(config->listeners[0].tls, TlsMode::may);
  EXPECT_EQ(config->listeners[1].address, "[::1]:465");
  EXPECT_EQ(config->listeners[1].host, "::1");
  EXPECT_EQ(config->listeners[1].port, 465);
  EXPECT_EQ(config->listeners[1].tls, TlsMode::implicit);
  EXPECT_EQ(config->listeners[2].tls, TlsMode::encrypt);
  EXPECT_EQ(config->listeners[3].host, "2001:db8::1");
  EXPECT_EQ(config->listeners[3].tls, TlsMode::none);

  ASSERT_EQ(config->tls.certificates.size(), 2u);
  EXPECT_EQ(config->tls.certificates[0].cert, dir.path() / "rsa.crt");
  EXPECT_EQ(config->tls.certificates[0].key, dir.path() / "rsa.key");
  EXPECT_EQ(config->tls.certificates[1].cert, dir.path() / "ec.crt");
  EXPECT_EQ(config->tls.certificates[1].key, dir.path() / "ec.key");
  EXPECT_EQ(config->tls.min_version, "TLSv1.3");
  EXPECT_EQ(config->tls.ciphers, "ECDHE-RSA-AES256-GCM-SHA384");
  EXPECT_EQ(config->tls.ciphersuites, "TLS_AES_256_GCM_SHA384");
  EXPECT_EQ(config->tls.groups, "X25519");

  EXPECT_EQ(config->limits.max_message_size, 1048576u);
  EXPECT_EQ(config->limits.max_recipients, 50u);
  EXPECT_EQ(config->limits.max_command_line, 512u);
  EXPECT_EQ(config->limits.max_errors, 3u);
  EXPECT_EQ(config->limits.max_connections, 20u);

  EXPECT_EQ(config->timeouts.command, 60s);
  EXPECT_EQ(config->timeouts.data, 120s);
  EXPECT_EQ(config->timeouts.tls_handshake, 10s);
  EXPECT_EQ(config->timeouts.shutdown, 5s);

  EXPECT_EQ(config->delivery.maildir, "/srv/mail/Maildir");
}

TEST(ConfigTest, CertificatesAsArrayOfTables) {
  TempDir dir;
  write_file(dir.path() / "c.pem", "cert");
  write_file(dir.path() / "k.pem", "key");
  auto config = parse(document("", "[[tls.certificates]]\ncert = \"c.pem\"\nkey = \"k.pem\"\n"), dir.path());
  ASSERT_TRUE(config) << config.error();
  ASSERT_EQ(config->tls.certificates.size(), 1u);
  EXPECT_EQ(config->tls.certificates[0].key, dir.path() / "k.pem");
}

TEST(ConfigTest, RelativePathsResolveAgainstBaseDir) {
  auto config = parse(R"(
hostname = "mx.example.test"
spool = "../spool/./mxgate"
[[listener]]
address = "127.0.0.1:25"
tls = "none"
[delivery]
maildir = "Maildir"
)",
                      "/etc/mxgate");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->spool, "/etc/spool/mxgate");
  EXPECT_EQ(config->delivery.maildir, "/etc/mxgate/Maildir");
}

TEST(ConfigTest, LoadFileResolvesAgainstTheFilesDirectory) {
  TempDir dir;
  fs::create_directories(dir.path() / "etc");
  write_file(dir.path() / "etc" / "mxgate.toml",
             "hostname = \"mx.example.test\"\nspool = \"spool\"\n"
             "[[listener]]\naddress = \"127.0.0.1:25\"\ntls = \"none\"\n"
             "[delivery]\nmaildir = \"../Maildir\"\n");
  auto config = load_file(dir.path() / "etc" / "mxgate.toml");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->source, dir.path() / "etc" / "mxgate.toml");
  EXPECT_EQ(config->spool, dir.path() / "etc" / "spool");
  EXPECT_EQ(config->delivery.maildir, dir.path() / "Maildir");
}

TEST(ConfigTest, LoadFileReportsAMissingFile) {
  auto config = load_file("/nonexistent/mxgate.toml");
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error(), "cannot read /nonexistent/mxgate.toml: No such file or directory");
}

TEST(ConfigTest, TlsModeNames) {
  EXPECT_EQ(to_string(TlsMode::none), "none");
  EXPECT_EQ(to_string(TlsMode::may), "may");
  EXPECT_EQ(to_string(TlsMode::encrypt), "encrypt");
  EXPECT_EQ(to_string(TlsMode::implicit), "implicit");
}

TEST(ConfigTest, SyntaxErrorNamesLineAndColumn) {
  const std::string error = error_of("hostname = \"mx.example.test\"\nspool = \n");
  EXPECT_EQ(error.rfind("line 2, column ", 0), 0u) << error;
}

TEST(ConfigTest, UnknownKeysAreNamed) {
  EXPECT_EQ(error_of(document("", "[limits]\nmax_mesage_size = 10\n")),
            "limits.max_mesage_size: unknown key");
  EXPECT_EQ(error_of(document("hostnme = \"x\"\n")), "hostnme: unknown key");
  EXPECT_EQ(error_of(document("", "[logging]\nlevel = \"debug\"\n")), "logging: unknown key");
  EXPECT_EQ(error_of(document("", "[timeouts]\nidle = 5\n")), "timeouts.idle: unknown key");
  EXPECT_EQ(error_of(document("", "[delivery.extra]\n")), "delivery.extra: unknown key");
  EXPECT_EQ(error_of(document("", "[tls]\nprotocols = \"x\"\n")), "tls.protocols: unknown key");
  EXPECT_EQ(error_of(document("", "[[tls.certificates]]\ncert = \"a\"\nkey = \"b\"\npass = \"c\"\n")),
            "tls.certificates[0].pass: unknown key");
  EXPECT_EQ(error_of(document("", "[[listener]]\naddress = \"127.0.0.2:25\"\nport = 25\n")),
            "listener[1].port: unknown key");
  EXPECT_EQ(error_of(document("\"odd key\\n\" = 1\n")), "\"odd key\\x0A\": unknown key");
}

TEST(ConfigTest, WrongTypesAreNamed) {
  EXPECT_EQ(error_of(document("", "[limits]\nmax_message_size = \"10M\"\n")),
            "limits.max_message_size: expected an integer");
  EXPECT_EQ(error_of(document("", "[timeouts]\ncommand = 1.5\n")), "timeouts.command: expected an integer");
  EXPECT_EQ(error_of(document("", "[limits]\nmax_errors = true\n")),
            "limits.max_errors: expected an integer");
  EXPECT_EQ(error_of("hostname = 5\n"), "hostname: expected a string");
  EXPECT_EQ(error_of(document("user = [\"a\"]\n")), "user: expected a string");
  EXPECT_EQ(error_of(document("limits = 5\n")), "limits: expected a table");
  EXPECT_EQ(error_of(document("", "[tls]\ncertificates = \"x\"\n")),
            "tls.certificates: expected an array of tables");
  EXPECT_EQ(error_of(document("", "[tls]\ncertificates = [\"x\"]\n")),
            "tls.certificates[0]: expected a table");
  EXPECT_EQ(error_of(document("", "[tls]\ngroups = 1\n")), "tls.groups: expected a string");
  EXPECT_EQ(error_of(document("", "[tls]\nciphers = 1\n")), "tls.ciphers: expected a string");
  EXPECT_EQ(error_of(document("", "[tls]\nciphersuites = 1\n")), "tls.ciphersuites: expected a string");
  EXPECT_EQ(
      error_of("hostname = \"mx.example.test\"\nspool = \"/s\"\n[listener]\naddress = \"127.0.0.1:25\"\n"),
      "listener: expected an array of tables");
  EXPECT_EQ(error_of("hostname = \"mx.example.test\"\nspool = 1\n"), "spool: expected a string");
}

TEST(ConfigTest, MissingRequiredKeysAreNamed) {
  const std::string listener = "[[listener]]\naddress = \"127.0.0.1:25\"\ntls = \"none\"\n";
  const std::string delivery = "[delivery]\nmaildir = \"/m\"\n";
  EXPECT_EQ(error_of("spool = \"/s\"\n" + listener + delivery), "hostname: missing required key");
  EXPECT_EQ(error_of("hostname = \"mx.example.test\"\n" + listener + delivery),
            "spool: missing required key");
  EXPECT_EQ(error_of("hostname = \"mx.example.test\"\nspool = \"/s\"\n" + delivery),
            "listener: at least one [[listener]] table is required");
  EXPECT_EQ(error_of("hostname = \"mx.example.test\"\nspool = \"/s\"\nlistener = []\n" + delivery),
            "listener: at least one [[listener]] table is required");
  // Without a Maildir, mail no route claims goes to its MX hosts; a
  // maildir route needs one.
  EXPECT_EQ(error_of("hostname = \"mx.example.test\"\nspool = \"/s\"\n" + listener +
                     "[[route]]\ndomain = \"*\"\nnext_hop = \"maildir\"\n"),
            "delivery.maildir: required because a route has next_hop = \"maildir\"");
  EXPECT_EQ(
      error_of("hostname = \"mx.example.test\"\nspool = \"/s\"\n[[listener]]\ntls = \"none\"\n" + delivery),
      "listener[0].address: missing required key");
  EXPECT_EQ(error_of(document("", "[[tls.certificates]]\ncert = \"/c\"\n")),
            "tls.certificates[0].key: missing required key");
}

TEST(ConfigTest, EmptyValuesAreRefused) {
  EXPECT_EQ(error_of("hostname = \"mx.example.test\"\nspool = \"\"\n"), "spool: must not be empty");
  EXPECT_EQ(error_of(document("user = \"\"\n")),
            "user: must not be empty (leave the key out to keep the current user)");
}

TEST(ConfigTest, HostnameMustLookLikeADomain) {
  auto with_hostname = [](const std::string& name) {
    return error_of("hostname = \"" + name +
                    "\"\nspool = \"/s\"\n[[listener]]\naddress = \"127.0.0.1:25\"\ntls = \"none\"\n"
                    "[delivery]\nmaildir = \"/m\"\n");
  };
  EXPECT_EQ(with_hostname("localhost"), "OK");
  EXPECT_EQ(with_hostname("mail-1.example.test"), "OK");
  EXPECT_EQ(with_hostname("mx_1.example.test"), "hostname: \"mx_1.example.test\" is not a domain name");
  EXPECT_EQ(with_hostname("-mx.example.test"), "hostname: \"-mx.example.test\" is not a domain name");
  EXPECT_EQ(with_hostname("mx..example"), "hostname: \"mx..example\" is not a domain name");
  EXPECT_EQ(with_hostname("mx.example.test."), "hostname: \"mx.example.test.\" is not a domain name");
  EXPECT_EQ(with_hostname("192.0.2.1"), "hostname: \"192.0.2.1\" is not a domain name");
  EXPECT_EQ(with_hostname(""), "hostname: \"\" is not a domain name");
  EXPECT_EQ(with_hostname(std::string(64, 'a') + ".test"),
            "hostname: \"" + std::string(64, 'a') + ".test\" is not a domain name");
}

TEST(ConfigTest, ListenerAddresses) {
  auto with_address = [](const std::string& address) {
    return error_of("hostname = \"mx.example.test\"\nspool = \"/s\"\n[[listener]]\naddress = \"" + address +
                    "\"\ntls = \"none\"\n[delivery]\nmaildir = \"/m\"\n");
  };
  EXPECT_EQ(with_address("127.0.0.1:1"), "OK");
  EXPECT_EQ(with_address("127.0.0.1:65535"), "OK");
  EXPECT_EQ(with_address("[::]:25"), "OK");
  EXPECT_EQ(with_address("[::ffff:192.0.2.1]:25"), "OK");
  EXPECT_EQ(with_address("localhost:25"),
            "listener[0].address: \"localhost\" is not an IPv4 address literal "
            "(expected \"IPv4:port\" or \"[IPv6]:port\")");
  EXPECT_EQ(with_address("[mx.example]:25"),
            "listener[0].address: \"mx.example\" is not an IPv6 address literal "
            "(expected \"IPv4:port\" or \"[IPv6]:port\")");
  EXPECT_EQ(with_address("[192.0.2.1]:25"),
            "listener[0].address: \"192.0.2.1\" is not an IPv6 address literal "
            "(expected \"IPv4:port\" or \"[IPv6]:port\")");
  EXPECT_EQ(with_address("::1:25"),
            "listener[0].address: \"::1:25\": an IPv6 address must be in brackets "
            "(expected \"IPv4:port\" or \"[IPv6]:port\")");
  EXPECT_EQ(with_address("127.0.0.1"),
            "listener[0].address: \"127.0.0.1\" has no port (expected \"IPv4:port\" or \"[IPv6]:port\")");
  EXPECT_EQ(with_address("[::1]25"),
            "listener[0].address: \"[::1]25\" is not an address (expected \"IPv4:port\" or \"[IPv6]:port\")");
  EXPECT_EQ(with_address("127.0.0.1:0"), "listener[0].address: port \"0\" is not a number from 1 to 65535");
  EXPECT_EQ(with_address("127.0.0.1:65536"),
            "listener[0].address: port \"65536\" is not a number from 1 to 65535");
  EXPECT_EQ(with_address("127.0.0.1:smtp"),
            "listener[0].address: port \"smtp\" is not a number from 1 to 65535");
  EXPECT_EQ(with_address("127.0.0.1:+25"),
            "listener[0].address: port \"+25\" is not a number from 1 to 65535");
  EXPECT_EQ(with_address("127.0.0.1:"), "listener[0].address: port \"\" is not a number from 1 to 65535");
}

TEST(ConfigTest, DuplicateListenersAreRefused) {
  EXPECT_EQ(error_of(document("", "[[listener]]\naddress = \"127.0.0.1:2525\"\ntls = \"none\"\n")),
            "listener[1].address: same address as listener[0]");
}

TEST(ConfigTest, BadTlsModeIsNamed) {
  EXPECT_EQ(error_of("hostname = \"mx.example.test\"\nspool = \"/s\"\n[[listener]]\n"
                     "address = \"127.0.0.1:25\"\ntls = \"starttls\"\n[delivery]\nmaildir = \"/m\"\n"),
            "listener[0].tls: expected one of none, may, encrypt, implicit");
  EXPECT_EQ(error_of("hostname = \"mx.example.test\"\nspool = \"/s\"\n[[listener]]\n"
                     "address = \"127.0.0.1:25\"\ntls = true\n[delivery]\nmaildir = \"/m\"\n"),
            "listener[0].tls: expected a string");
}

TEST(ConfigTest, TlsListenerNeedsACertificate) {
  EXPECT_EQ(error_of("hostname = \"mx.example.test\"\nspool = \"/s\"\n[[listener]]\n"
                     "address = \"127.0.0.1:25\"\n[delivery]\nmaildir = \"/m\"\n"),
            "tls.certificates: at least one {cert, key} pair is required because listener[0].tls "
            "is \"may\"");
}

TEST(ConfigTest, CertificateFilesMustBeReadable) {
  TempDir dir;
  write_file(dir.path() / "rsa.crt", "cert");
  write_file(dir.path() / "rsa.key", "key");
  write_file(dir.path() / "ec.crt", "cert");
  const std::string tls =
      "[tls]\ncertificates = [\n"
      "  { cert = \"rsa.crt\", key = \"rsa.key\" },\n"
      "  { cert = \"ec.crt\", key = \"ec.key\" },\n]\n";
  EXPECT_EQ(error_of(document("", tls), dir.path()), "tls.certificates[1].key: cannot read " +
                                                         (dir.path() / "ec.key").string() +
                                                         ": No such file or directory");
  EXPECT_EQ(
      error_of(document("", "[tls]\ncertificates = [{ cert = \"/nonexistent/x.crt\", key = \"rsa.key\" }]\n"),
               dir.path()),
      "tls.certificates[0].cert: cannot read /nonexistent/x.crt: No such file or directory");
  fs::create_directory(dir.path() / "certs");
  EXPECT_EQ(
      error_of(document("", "[tls]\ncertificates = [{ cert = \"certs\", key = \"rsa.key\" }]\n"), dir.path()),
      "tls.certificates[0].cert: cannot read " + (dir.path() / "certs").string() + ": not a regular file");
}

TEST(ConfigTest, MinVersionIsChecked) {
  EXPECT_EQ(error_of(document("", "[tls]\nmin_version = \"TLSv1.2\"\n")), "OK");
  EXPECT_EQ(error_of(document("", "[tls]\nmin_version = \"TLSv1.1\"\n")),
            "tls.min_version: expected one of TLSv1.2, TLSv1.3");
}

TEST(ConfigTest, LimitsAreCheckedAtTheirBounds) {
  auto limit = [](const std::string& key, const std::string& value) {
    return error_of(document("", "[limits]\n" + key + " = " + value + "\n"));
  };
  EXPECT_EQ(limit("max_message_size", "1"), "OK");
  EXPECT_EQ(limit("max_message_size", "0"), "limits.max_message_size: must be at least 1");
  EXPECT_EQ(limit("max_message_size", "-5"), "limits.max_message_size: must be at least 1");
  EXPECT_EQ(limit("max_recipients", "1"), "OK");
  EXPECT_EQ(limit("max_recipients", "0"), "limits.max_recipients: must be at least 1");
  EXPECT_EQ(limit("max_command_line", "512"), "OK");
  EXPECT_EQ(limit("max_command_line", "65536"), "OK");
  EXPECT_EQ(limit("max_command_line", "511"), "limits.max_command_line: must be between 512 and 65536");
  EXPECT_EQ(limit("max_command_line", "65537"), "limits.max_command_line: must be between 512 and 65536");
  EXPECT_EQ(limit("max_errors", "1"), "OK");
  EXPECT_EQ(limit("max_errors", "0"), "limits.max_errors: must be between 1 and 4294967295");
  EXPECT_EQ(limit("max_errors", "4294967296"), "limits.max_errors: must be between 1 and 4294967295");
  EXPECT_EQ(limit("max_connections", "1"), "OK");
  EXPECT_EQ(limit("max_connections", "0"), "limits.max_connections: must be at least 1");
}

TEST(ConfigTest, TimeoutsAreCheckedAtTheirBounds) {
  for (const std::string key : {"command", "data", "tls_handshake", "shutdown"}) {
    auto timeout = [&](const std::string& value) {
      return error_of(document("", "[timeouts]\n" + key + " = " + value + "\n"));
    };
    EXPECT_EQ(timeout("1"), "OK");
    EXPECT_EQ(timeout("86400"), "OK");
    EXPECT_EQ(timeout("0"), "timeouts." + key + ": must be between 1 and 86400");
    EXPECT_EQ(timeout("86401"), "timeouts." + key + ": must be between 1 and 86400");
  }
}

}  // namespace
}  // namespace mxgate::config
