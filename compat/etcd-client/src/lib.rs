//! Compatibility tests of raftkv against the `etcd-client` crate; the tests
//! live in `tests/`. This library is empty.
