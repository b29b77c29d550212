fn main() {
    rollgate_build::compile("transport");
}
