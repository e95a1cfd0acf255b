package rbd

// metaFrontEnd records on an image the plugin front end that created it (driver.FrontEndVolume
// or driver.FrontEndCSI), so that each front end refuses the other's volumes (driver/frontend.go).
const metaFrontEnd = metaPrefix + "front-end"

// recordFrontEnd adds the creating front end to the metadata of a new image ("" records nothing).
func recordFrontEnd(meta map[string]string, frontEnd string) {
	if frontEnd != "" {
		meta[metaFrontEnd] = frontEnd
	}
}
