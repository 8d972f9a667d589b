<?php
// make bench-node's profile (BENCH_PROFILE): PHP-FPM's auto_prepend_file while the shipped configuration is
// profiled. Excimer (Debian's php-excimer, Wikimedia's sampling profiler) samples the request's CPU time
// every millisecond; at the very end of the request (a shutdown function registered from a shutdown
// function runs after Moodle's own) the stacks are appended, in the collapsed format flame graphs read,
// under a first frame naming the script, to one file per worker process.
if (extension_loaded('excimer') && PHP_SAPI === 'fpm-fcgi') {
    $moodlecfnprofiler = new ExcimerProfiler();
    $moodlecfnprofiler->setPeriod(0.001);
    $moodlecfnprofiler->setEventType(EXCIMER_CPU);
    $moodlecfnprofiler->start();
    register_shutdown_function(function () use ($moodlecfnprofiler): void {
        register_shutdown_function(function () use ($moodlecfnprofiler): void {
            $moodlecfnprofiler->stop();
            $script = parse_url($_SERVER['REQUEST_URI'] ?? '', PHP_URL_PATH) ?: '/';
            $script = str_replace(';', '_', $script);
            $lines = '';
            foreach (explode("\n", $moodlecfnprofiler->getLog()->formatCollapsed()) as $line) {
                if ($line !== '') {
                    $lines .= $script . ';' . $line . "\n";
                }
            }
            file_put_contents('/var/log/moodle-cfn-excimer/' . getmypid() . '.collapsed', $lines, FILE_APPEND | LOCK_EX);
        });
    });
}
