import LanceCLI

@main
struct Entrypoint {
    static func main() { EvalCommand.main() }
}
