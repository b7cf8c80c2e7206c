// What a caller with the admin token can make the server read or write on disk, over gRPC and
// HTTP: LoadAdapter and /v1/load_lora_adapter read only under --load-root (`..` segments, a
// symlinked folder and a symlinked file inside an allowed folder all refused; a symlink that
// stays inside the root, as in a Hugging Face cache, allowed), and adapter ids cannot name files
// outside the store.
#include <httplib.h>
#include <sys/stat.h>

#include <filesystem>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "tests/server/server_test_util.h"

namespace loraserve::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSecret[] = "outside-secret-5f3e";

class AdapterPathsTest : public ServerFixture {
 protected:
  void Configure(server::ServerOptions& options) override { options.http.listen = "127.0.0.1:0"; }

  grpc::Status Load(const std::string& id, const std::string& path) {
    grpc::ClientContext context;
    Authorize(&context);
    v1::LoadAdapterRequest request;
    request.set_adapter_id(id);
    request.set_path(path);
    v1::AdapterStatus status;
    return admin_->LoadAdapter(&context, request, &status);
  }
  int HttpLoad(const std::string& name, const std::string& path, std::string* body = nullptr) {
    httplib::Client client("127.0.0.1", server_->http_port());
    client.set_read_timeout(60, 0);
    auto res = client.Post(
        "/v1/load_lora_adapter",
        httplib::Headers{{"Authorization", std::string("Bearer ") + kAdminToken}},
        nlohmann::json{{"lora_name", name}, {"lora_path", path}}.dump(), "application/json");
    if (!res) return -1;
    if (body != nullptr) *body = res->body;
    return res->status;
  }
  // Every entry under `dir`, recursively (to show nothing was written outside the store).
  static std::vector<std::string> Tree(const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  TempDir outside_;
};

TEST_F(AdapterPathsTest, LoadsStayInsideTheLoadRoot) {
  const auto files = AdapterFiles(base_, 5);
  const std::string root = load_root_.path();
  const std::string out = outside_.path();
  WriteAdapterDir(out + "/a", files);
  WriteFile(out + "/secret.json", std::string("{\"") + kSecret + "\": nope");
  WriteAdapterDir(root + "/inside", files);

  // A folder whose config is a symlink to a file outside (its contents would show up in a JSON
  // parse error), one whose weights are, a symlink to an outside folder, and `..` escapes.
  WriteAdapterDir(root + "/config-link",
                  {{"adapter_model.safetensors", files.at("adapter_model.safetensors")}});
  fs::create_symlink(out + "/secret.json", root + "/config-link/adapter_config.json");
  WriteAdapterDir(root + "/weights-link",
                  {{"adapter_config.json", files.at("adapter_config.json")}});
  fs::create_symlink(out + "/a/adapter_model.safetensors",
                     root + "/weights-link/adapter_model.safetensors");
  fs::create_symlink(out + "/a", root + "/dir-link");
  const std::string dotdot = root + "/../" + fs::path(out).filename().string() + "/a";
  const std::string dotdot_inside =
      root + "/inside/../../" + fs::path(out).filename().string() + "/a";

  // A Hugging Face cache keeps blobs apart and links them into snapshots: inside the root, fine.
  WriteAdapterDir(root + "/blobs", {{"weights", files.at("adapter_model.safetensors")}});
  WriteAdapterDir(root + "/snapshot", {{"adapter_config.json", files.at("adapter_config.json")}});
  fs::create_symlink("../blobs/weights", root + "/snapshot/adapter_model.safetensors");

  // A FIFO under the weights' name must be refused, not block the loader.
  WriteAdapterDir(root + "/fifo", {{"adapter_config.json", files.at("adapter_config.json")}});
  ASSERT_EQ(::mkfifo((root + "/fifo/adapter_model.safetensors").c_str(), 0600), 0);

  const std::vector<std::string> store_before = StoreEntries();
  const std::vector<std::string> outside_before = Tree(out);
  struct Case {
    std::string path;
    grpc::StatusCode code;
    int http;
  };
  const std::vector<Case> refused = {
      {out + "/a", grpc::StatusCode::PERMISSION_DENIED, 403},
      {dotdot, grpc::StatusCode::PERMISSION_DENIED, 403},
      {dotdot_inside, grpc::StatusCode::PERMISSION_DENIED, 403},
      {root + "/dir-link", grpc::StatusCode::PERMISSION_DENIED, 403},
      {root + "/config-link", grpc::StatusCode::PERMISSION_DENIED, 403},
      {root + "/weights-link", grpc::StatusCode::PERMISSION_DENIED, 403},
      {root + "/..", grpc::StatusCode::PERMISSION_DENIED, 403},
      {"/", grpc::StatusCode::PERMISSION_DENIED, 403},
      {root + "/fifo", grpc::StatusCode::INVALID_ARGUMENT, 400},
      {root + "/missing", grpc::StatusCode::NOT_FOUND, 404},
  };
  int n = 0;
  for (const Case& c : refused) {
    const std::string id = "refused-" + std::to_string(n++);
    const grpc::Status s = Load(id, c.path);
    EXPECT_EQ(s.error_code(), c.code) << c.path << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), Not(HasSubstr(kSecret))) << c.path;
    std::string body;
    EXPECT_EQ(HttpLoad(id, c.path, &body), c.http) << c.path << ": " << body;
    EXPECT_THAT(body, Not(HasSubstr(kSecret))) << c.path;
  }
  EXPECT_TRUE(ListIds().empty());
  EXPECT_EQ(StoreEntries(), store_before);
  EXPECT_EQ(Tree(out), outside_before);

  EXPECT_TRUE(Load("inside", root + "/inside").ok());
  EXPECT_TRUE(Load("hf-style", root + "/snapshot").ok());
  EXPECT_EQ(HttpLoad("inside-http", root + "/inside"), 200);
  EXPECT_EQ(ListIds(), (std::vector<std::string>{"hf-style", "inside", "inside-http"}));
}

TEST_F(AdapterPathsTest, AdapterIdsCannotNameFilesOutsideTheStore) {
  const auto files = AdapterFiles(base_, 6);
  WriteAdapterDir(load_root_.path() + "/ok", files);
  const std::string store_parent = fs::path(store_.path()).string();
  const std::vector<std::string> tree_before = Tree(store_parent);
  const std::vector<std::string> bad_ids = {
      "../x",
      "a/b",
      ".hidden",
      "..",
      ".",
      "/abs",
      "x/../../y",
      std::string(129, 'a'),
      std::string("a\0b", 3),
      "a b",
      "a\\b",
      "-lead",
      "é",
      "a\nb",
  };
  for (const std::string& id : bad_ids) {
    const std::string shown = absl::CHexEscape(id);
    const grpc::Status upload = Upload(id, files);
    EXPECT_EQ(upload.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << shown;
    EXPECT_THAT(upload.error_message(), HasSubstr("adapter_id")) << shown;
    const grpc::Status load = Load(id, load_root_.path() + "/ok");
    EXPECT_EQ(load.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << shown;
    EXPECT_THAT(load.error_message(), HasSubstr("adapter_id")) << shown;
    std::string body;
    EXPECT_EQ(HttpLoad(id, load_root_.path() + "/ok", &body), 400) << shown << ": " << body;
  }
  // The longest valid id is fine, and a file name in an upload cannot climb out either.
  EXPECT_TRUE(Upload(std::string(128, 'a'), files).ok());
  auto climbing = files;
  climbing["../../escaped"] = "x";
  EXPECT_EQ(Upload("climb", climbing).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ListIds(), std::vector<std::string>{std::string(128, 'a')});
  std::vector<std::string> tree_after = Tree(store_parent);
  std::vector<std::string> added;
  std::set_difference(tree_after.begin(), tree_after.end(), tree_before.begin(), tree_before.end(),
                      std::back_inserter(added));
  for (const std::string& path : added) {
    EXPECT_EQ(path.rfind(store_parent + "/store/", 0), 0u) << path << " is outside the store";
  }
  EXPECT_FALSE(fs::exists(fs::path(store_parent).parent_path() / "escaped"));
  EXPECT_FALSE(fs::exists(fs::path(store_parent) / "x"));
}

}  // namespace
}  // namespace loraserve::testing
