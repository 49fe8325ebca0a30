// The MySQL migrations are embedded by `sqlx::migrate!`, which cannot tell cargo to build again
// when a migration is added or changed: this does.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
