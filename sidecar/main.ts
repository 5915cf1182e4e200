export async function run(_argv: string[]): Promise<number> {
  process.stderr.write('mtls-operator sidecar: not implemented yet\n');
  return 1;
}
