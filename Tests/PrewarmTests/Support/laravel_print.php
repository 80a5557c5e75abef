<?php
// The Laravel Claude Agent SDK's way of running the CLI, with Debian's Symfony Process:
// `claude --output-format stream-json --verbose [--resume S] --print PROMPT`,
// buffered (`run()`), streamed (`start()` and the output as it comes), or stopped mid-answer
// (`stop()`: Symfony sends SIGTERM first; `interrupt`: SIGINT). Run by PrintPHPTests:
//   php laravel_print.php MODE PROMPT [SESSION]
// with PREWARM_TEST_CLI the CLI's path (`CLAUDE_AGENT_CLI_PATH`). Prints one JSON object:
// the exit status, the stream-json lines' types, the result, the session id.
require_once '/usr/share/php/Symfony/Component/Process/autoload.php';

use Symfony\Component\Process\Process;

[$script, $mode, $prompt] = $argv;
$session = $argv[3] ?? null;
$command = [getenv('PREWARM_TEST_CLI'), '--output-format', 'stream-json', '--verbose'];
if ($session !== null) {
    array_push($command, '--resume', $session);
}
array_push($command, '--print', $prompt);
$process = new Process($command, getenv('PREWARM_TEST_PROJECT'));
$process->setTimeout(120);

$lines = [];
$buffer = '';
$take = function (string $data) use (&$buffer, &$lines) {
    $buffer .= $data;
    while (($end = strpos($buffer, "\n")) !== false) {
        $line = substr($buffer, 0, $end);
        $buffer = substr($buffer, $end + 1);
        if ($line !== '') {
            $lines[] = json_decode($line, true);
        }
    }
};

switch ($mode) {
    case 'run':
        $process->run();
        $take($process->getOutput());
        break;
    case 'stream':
        $process->start();
        foreach ($process as $type => $data) {
            if ($type === Process::OUT) {
                $take($data);
            }
        }
        break;
    case 'stop':
    case 'interrupt':
        // stop(): Symfony sends SIGTERM first, the signal given only after its timeout;
        // interrupt: SIGINT itself (a Ctrl-C). Both mid-answer, after the first line.
        $process->start();
        foreach ($process as $type => $data) {
            if ($type === Process::OUT) {
                $take($data);
                if ($lines) {
                    break;
                }
            }
        }
        if ($mode === 'stop') {
            $process->stop(5, SIGINT);
        } else {
            $process->signal(SIGINT);
            $process->wait();
        }
        $take($process->getIncrementalOutput());
        break;
}
$result = null;
foreach ($lines as $line) {
    if (($line['type'] ?? null) === 'result') {
        $result = $line;
    }
}
echo json_encode([
    'status' => $process->getExitCode(),
    'types' => array_map(fn ($line) => $line['type'] ?? null, $lines),
    'result' => $result['result'] ?? null,
    'session_id' => $result['session_id'] ?? null,
    'partial' => $buffer,
    'stderr' => $process->getErrorOutput(),
]), "\n";
