/**
 * The commands in the NOTES part of `helm install` output, to run as a person would: lines starting with
 * kubectl, a here-document kept with its command (NOTES indents it; the indent is removed), comments dropped.
 */
export function notesCommands(output: string): string[] {
  const start = output.indexOf('NOTES:');
  if (start < 0) throw new Error('no NOTES in the helm output');
  const lines = output.slice(start).split('\n');
  const commands: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line.startsWith('kubectl ')) continue;
    let command = line.replace(/\s+#.*$/, '');
    const heredoc = /<<'(\w+)'$/.exec(command);
    if (heredoc) {
      const indent = /^\s*/.exec(lines[i]!)![0].length;
      while (i + 1 < lines.length && lines[i + 1]!.trim() !== heredoc[1]) {
        command += `\n${lines[++i]!.slice(indent)}`;
      }
      command += `\n${heredoc[1]}`;
      i++;
    }
    commands.push(command);
  }
  return commands;
}

/** Runs one NOTES command with bash, `kubectl` being the given binary and kubeconfig. */
export async function runNotesCommand(
  command: string,
  kubectl: { bin: string; kubeconfig: string },
  cwd: string,
): Promise<void> {
  const { execFile } = await import('node:child_process');
  await new Promise<void>((resolve, reject) =>
    execFile(
      'bash',
      ['-ec', `kubectl() { "$KUBECTL_BIN" --kubeconfig "$KUBECONFIG_FILE" "$@"; }\n${command}`],
      { cwd, timeout: 120_000, env: { ...process.env, KUBECTL_BIN: kubectl.bin, KUBECONFIG_FILE: kubectl.kubeconfig } },
      (err, _stdout, stderr) => (err ? reject(new Error(`NOTES command failed: ${command}\n${stderr}`)) : resolve()),
    ),
  );
}
