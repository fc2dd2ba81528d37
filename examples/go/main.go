// Go against the emulator: cloud.google.com/go/compute/metadata for metadata, golang.org/x/oauth2/google for
// Application Default Credentials (an access token), google.golang.org/api/idtoken for an ID token.
//
//	export GCE_METADATA_HOST=127.0.0.1:8080   # the only variable Go's libraries read
//	go mod tidy && go run .
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"cloud.google.com/go/compute/metadata"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/idtoken"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	project, err := metadata.ProjectID()
	if err != nil {
		return err
	}
	email, err := metadata.Email("default")
	if err != nil {
		return err
	}
	zone, err := metadata.Zone()
	if err != nil {
		return err
	}

	// ADC finds no key file and no gcloud credentials, sees metadata.OnGCE() and uses the metadata server.
	creds, err := google.FindDefaultCredentials(ctx, "https://www.googleapis.com/auth/cloud-platform")
	if err != nil {
		return err
	}
	access, err := creds.TokenSource.Token()
	if err != nil {
		return err
	}

	ids, err := idtoken.NewTokenSource(ctx, "https://example.com")
	if err != nil {
		return err
	}
	id, err := ids.Token()
	if err != nil {
		return err
	}

	return json.NewEncoder(os.Stdout).Encode(map[string]string{
		"onGCE":        fmt.Sprint(metadata.OnGCE()),
		"projectId":    project,
		"adcProjectId": creds.ProjectID,
		"email":        email,
		"zone":         zone,
		"accessToken":  access.AccessToken,
		"idToken":      id.AccessToken,
	})
}
