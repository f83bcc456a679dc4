/* Config parsing: defaults, every type, and errors that name the key and line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "app/config.c"

static char path[64];

static const char *write_file(const char *text)
{
    strcpy(path, "/tmp/tg-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void defaults_match_the_table(void **state)
{
    tg_config_t cfg;
    tg_config_defaults(&cfg);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_int_equal(cfg.io_threads, 0);
    assert_int_equal(cfg.workers, 2);
    assert_false(cfg.reuseport);
    assert_int_equal(cfg.http.max_uri, 8192);
    assert_int_equal(cfg.http.max_header_size, 16384);
    assert_int_equal(cfg.http.max_body, 1024 * 1024);
    assert_int_equal(cfg.http.header_timeout_ms, 10000);
    assert_int_equal(cfg.http.keepalive_timeout_ms, 75000);
    assert_int_equal(cfg.shutdown_grace_ms, 1500);
}

static void file_sets_every_type(void **state)
{
    tg_config_t cfg;
    char err[256] = "";
    tg_config_defaults(&cfg);
    const char *p = write_file("# comment\n\n"
                               "listen = [::1]:9000   # trailing comment\n"
                               "io_threads=4\n"
                               "reuseport = yes\n"
                               "log_level = debug\n"
                               "http.max_body = 2m\n"
                               "http.max_uri = 512\n"
                               "http.header_timeout = 1500ms\n"
                               "http.keepalive_timeout = 2m\n");
    assert_int_equal(tg_config_load(&cfg, p, err, sizeof(err)), 0);
    unlink(p);
    assert_string_equal(cfg.listen, "[::1]:9000");
    assert_int_equal(cfg.io_threads, 4);
    assert_true(cfg.reuseport);
    assert_int_equal(cfg.log_level, TG_LOG_DEBUG);
    assert_int_equal(cfg.http.max_body, 2 * 1024 * 1024);
    assert_int_equal(cfg.http.max_uri, 512);
    assert_int_equal(cfg.http.header_timeout_ms, 1500);
    assert_int_equal(cfg.http.keepalive_timeout_ms, 120000);
}

/* Each bad line is refused with the file, its line number and the key named. */
static void expect_load_error(const char *text, const char *needle)
{
    tg_config_t cfg;
    char err[512] = "";
    tg_config_defaults(&cfg);
    const char *p = write_file(text);
    assert_int_equal(tg_config_load(&cfg, p, err, sizeof(err)), -EINVAL);
    unlink(p);
    if (!strstr(err, needle) || !strstr(err, p))
        fail_msg("error '%s' lacks '%s' or the path", err, needle);
}

static void errors_name_file_line_and_key(void **state)
{
    expect_load_error("listen = 127.0.0.1:1\nnope = 1\n", ":2: unknown key 'nope'");
    expect_load_error("io_threads = many\n", ":1: 'io_threads' expects a whole number");
    expect_load_error("io_threads = 100000\n", ":1: 'io_threads' expects a whole number between");
    expect_load_error("\n\nhttp.header_timeout = 10\n", ":3: 'http.header_timeout' expects a duration");
    expect_load_error("http.header_timeout = 10 s\n", "'http.header_timeout' expects a duration");
    expect_load_error("http.max_body = 1x\n", "'http.max_body' expects a size");
    expect_load_error("http.max_body = -1\n", "'http.max_body' expects a size");
    expect_load_error("reuseport = maybe\n", "'reuseport' expects true or false");
    expect_load_error("log_level = loud\n", "'log_level' expects error, warn, info or debug");
    expect_load_error("just words\n", ":1: expected 'key = value'");
    expect_load_error("http.max_uri = 99999999999999999999999\n", "'http.max_uri' expects a size");
}

static void channel_rules_override_push_defaults_in_order(void **state)
{
    tg_config_t cfg;
    char err[256] = "";
    tg_config_defaults(&cfg);
    const char *p = write_file("push.history_len = 50\n"
                               "channel.px.*.mode = latest\n"
                               "channel.px.*.history_len = 1\n"
                               "channel.*.client_publish = false\n");
    assert_int_equal(tg_config_load(&cfg, p, err, sizeof(err)), 0);
    unlink(p);
    tg_chan_opts_t def;
    tg_chan_rule_t rules[TG_CHAN_RULES_MAX];
    assert_int_equal(tg_config_chan_rules(&cfg, &def, rules), 2);
    assert_int_equal(def.history_len, 50);
    assert_string_equal(rules[0].pattern, "px.*");
    assert_int_equal(rules[0].opts.mode, TG_MODE_LATEST);
    assert_int_equal(rules[0].opts.history_len, 1);
    assert_true(rules[0].opts.client_publish); /* not set by this rule: the default */
    assert_string_equal(rules[1].pattern, "*");
    assert_false(rules[1].opts.client_publish);
    assert_int_equal(rules[1].opts.history_len, 50);
    expect_load_error("channel.a b.mode = all\n", "the pattern");
    expect_load_error("channel.x.mode = fast\n", "expects all or latest");
    expect_load_error("channel.x.colour = red\n", "unknown channel field");
    expect_load_error("channel.x.history_len = lots\n", "expects a whole number");
}

static void missing_file_is_reported(void **state)
{
    tg_config_t cfg;
    char err[256] = "";
    tg_config_defaults(&cfg);
    assert_true(tg_config_load(&cfg, "/nonexistent/tidegate.conf", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "/nonexistent/tidegate.conf"));
}

static void set_refuses_unknown_key(void **state)
{
    tg_config_t cfg;
    char err[256] = "";
    tg_config_defaults(&cfg);
    assert_int_equal(tg_config_set(&cfg, "http.nope", "1", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "unknown key 'http.nope'"));
}

static void route_cache_fields(void **state)
{
    tg_config_t cfg;
    tg_routes_t routes;
    char err[256] = "";
    tg_config_defaults(&cfg);
    assert_int_equal(cfg.gate_cache_size, 64u << 20);
    assert_int_equal(tg_config_set(&cfg, "route.a.cache", "10s", err, sizeof(err)), 0);
    assert_int_equal(tg_config_set(&cfg, "route.a.private", "true", err, sizeof(err)), 0);
    assert_int_equal(tg_config_set(&cfg, "route.b.cache", "0", err, sizeof(err)), 0);
    assert_int_equal(tg_config_set(&cfg, "route.b.cache_errors", "yes", err, sizeof(err)), 0);
    assert_int_equal(tg_config_set(&cfg, "route.c.cache", "10", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "route.c.cache"));
    assert_int_equal(tg_config_set(&cfg, "route.c.cache", "31d", err, sizeof(err)), -EINVAL);
    assert_int_equal(tg_config_set(&cfg, "route.c.private", "maybe", err, sizeof(err)), -EINVAL);
    assert_int_equal(tg_config_set(&cfg, "gate.cache_size", "1m", err, sizeof(err)), 0);
    assert_int_equal(cfg.gate_cache_size, 1u << 20);
    tg_config_routes(&cfg, &routes);
    assert_string_equal(routes.r[0].name, "a");
    assert_int_equal(routes.r[0].cache_ttl_ms, 10000);
    assert_true(routes.r[0].cache_private && !routes.r[0].cache_errors);
    assert_int_equal(routes.r[1].cache_ttl_ms, 0);
    assert_true(routes.r[1].cache_errors && !routes.r[1].cache_private);
    assert_int_equal(routes.defaults.cache_ttl_ms, 0); /* auto routes never cache */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_match_the_table),
        cmocka_unit_test(file_sets_every_type),
        cmocka_unit_test(errors_name_file_line_and_key),
        cmocka_unit_test(channel_rules_override_push_defaults_in_order),
        cmocka_unit_test(missing_file_is_reported),
        cmocka_unit_test(set_refuses_unknown_key),
        cmocka_unit_test(route_cache_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
