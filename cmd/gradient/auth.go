package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/gradient-cdn/gradient/auth"
)

func init() {
	register("auth", "auth helpers: hash a password for auth.internal_users, sign a viewer URL", runAuth)
}

func runAuth(ctx context.Context, args []string) error {
	return authCmd(args, os.Stdin, os.Stdout, os.Stderr, time.Now())
}

// authCmd implements `gradient auth hash` and `gradient auth sign`.
func authCmd(args []string, stdin io.Reader, stdout, stderr io.Writer, now time.Time) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: gradient auth hash [--argon2] < password\n       gradient auth sign --key KEY --path live/cam1 [--ttl 1h]")
		return flag.ErrHelp
	}
	switch args[0] {
	case "hash":
		fs := flag.NewFlagSet("auth hash", flag.ContinueOnError)
		fs.SetOutput(stderr)
		useArgon := fs.Bool("argon2", false, "argon2id (slow to guess) instead of SHA-256")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		// The password comes on stdin: a flag would show in ps and the shell history.
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		pass := strings.TrimRight(line, "\r\n")
		if pass == "" {
			return errors.New("hash: no password on stdin")
		}
		if !*useArgon {
			sum := sha256.Sum256([]byte(pass))
			fmt.Fprintln(stdout, "sha256:"+base64.StdEncoding.EncodeToString(sum[:]))
			return nil
		}
		salt := make([]byte, 16)
		rand.Read(salt)
		const mem, passes, threads = 64 << 10, 3, 2
		h := argon2.IDKey([]byte(pass), salt, passes, mem, threads, 32)
		fmt.Fprintf(stdout, "argon2:$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s\n", argon2.Version, mem, passes, threads,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(h))
		return nil
	case "sign":
		fs := flag.NewFlagSet("auth sign", flag.ContinueOnError)
		fs.SetOutput(stderr)
		key := fs.String("key", os.Getenv("GRADIENT_URL_SIGNING_KEY"), "auth.url_signing_key (default $GRADIENT_URL_SIGNING_KEY)")
		path := fs.String("path", "", "stream path, e.g. live/cam1")
		ttl := fs.Duration("ttl", time.Hour, "how long the link works")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *key == "" || *path == "" {
			return errors.New("sign: --key and --path are required")
		}
		fmt.Fprintln(stdout, auth.SignQuery([]byte(*key), *path, now.Add(*ttl)))
		return nil
	}
	return fmt.Errorf("unknown auth command %q (hash or sign)", args[0])
}
