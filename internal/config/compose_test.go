package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/knadh/koanf/parsers/yaml"
)

// TestComposePublishesNoRedisPort: docker-compose.yml must not publish
// Redis on the host, where it would collide with a local Redis on 6379.
func TestComposePublishesNoRedisPort(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := yaml.Parser().Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	services, _ := doc["services"].(map[string]any)
	redis, ok := services["redis"].(map[string]any)
	if !ok {
		t.Fatalf("docker-compose.yml has no redis service: %v", services)
	}
	if ports, ok := redis["ports"]; ok {
		t.Fatalf("the redis service publishes %v on the host", ports)
	}
}
