<?php
// The Amazon SES SMTP password of an IAM access key, for one Region. Usage (as root, by
// moodle-node-setup.sh): the secret access key on stdin, never as an argument (/proc/PID/cmdline is
// readable by every local user); the Region as the only argument; the password on stdout.
//
// The algorithm is AWS's ("Obtaining Amazon SES SMTP credentials", SES Developer Guide,
// https://docs.aws.amazon.com/ses/latest/dg/smtp-credentials.html): a SigV4-style HMAC-SHA256 chain from
// "AWS4" + key over the fixed date "11111111", the Region, "ses", "aws4_request" and "SendRawEmail", then
// the version byte 0x04 before the signature, Base64-encoded. tests/test_mail.py checks it against the
// output of AWS's own Python reference (AWS SDK Code Examples, ses_generate_smtp_credentials.py).

if (PHP_SAPI !== 'cli' || $argc !== 2 || !preg_match('/^[a-z]{2}(-[a-z]+)+-[0-9]$/', $argv[1])) {
    fwrite(STDERR, "usage: ses-smtp-password.php REGION < secret-access-key\n");
    exit(2);
}
$secretkey = rtrim((string) stream_get_contents(STDIN), "\r\n");
if ($secretkey === '') {
    fwrite(STDERR, "ses-smtp-password.php: no secret access key on stdin\n");
    exit(2);
}

/**
 * The SES SMTP password of `$secretkey` in `$region`.
 */
function ses_smtp_password(string $secretkey, string $region): string {
    $signature = 'AWS4' . $secretkey;
    foreach (['11111111', $region, 'ses', 'aws4_request', 'SendRawEmail'] as $message) {
        $signature = hash_hmac('sha256', $message, $signature, true);
    }
    return base64_encode("\x04" . $signature);
}

echo ses_smtp_password($secretkey, $argv[1]), "\n";
