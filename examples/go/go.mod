module example.com/gce-metadata-go

go 1.19

require (
	cloud.google.com/go/compute/metadata v0.2.3
	golang.org/x/oauth2 v0.3.0
	google.golang.org/api v0.61.0
)
