fn main() {
    // The reference service's transport versions live at the repository root.
    rollgate_build::compile("../../transport");
}
