import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    # As in authentik 2026.2.0, the dependency on the other app's migration is missing
    # upstream; the packaged build adds it with [[substitute]].
    dependencies = [
    ]
    operations = [
        migrations.CreateModel(
            name="Brand",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("domain", models.CharField(max_length=255, unique=True)),
                ("flow_authentication", models.ForeignKey(
                    null=True, on_delete=django.db.models.deletion.SET_NULL,
                    to="authentik_flows.flow")),
            ],
        ),
    ]
